# ecoscale lab image: the service emulator's code (stdlib-only Python) and nothing else.
# No registry is reachable on the lab machines, so nothing can be pulled: the image is built
# FROM scratch by `ecoscale lab up`, and the host's Python interpreter (and, for the
# Prometheus service, the host's Prometheus binary) is bind-mounted read-only at run time
# (/usr, /lib, /lib64). `ecoscale lab up` copies the built image to every engine
# (docker save | docker load). The tag carries a hash of the content.
FROM scratch
COPY rootfs/ /
ENV PYTHONPATH=/opt/ecoscale PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
