"""The service emulator: an asyncio HTTP service that plays one microservice of an app.

Stdlib only — it runs inside the lab's containers on Debian's /usr/bin/python3. Start one with
``python3 -m ecoscale.emulator --spec app.json --service NAME`` (see ``service.py`` for how a
request maps to the model, and ``metrics.py`` for what it exports on /metrics).
"""
