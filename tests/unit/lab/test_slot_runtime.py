"""The lab's runtime wrapper: a CPU limit's CFS period shortened at the same share."""

import json
import stat

from ecoscale.lab.slot_runtime import bundle_of, main, with_period, wrapper_text


def oci(quota, period=100_000):
    return {"linux": {"resources": {"cpu": {"quota": quota, "period": period,
                                            "shares": 51}}}}


def test_a_limit_keeps_its_share_of_a_cpu_at_the_short_period():
    config = oci(5000)                        # Docker's 0.05 CPU: 5 ms per 100 ms
    assert with_period(config, 20_000)
    assert config["linux"]["resources"]["cpu"] == {"quota": 1000, "period": 20_000,
                                                   "shares": 51}
    tiny = oci(500)                           # under the kernel's 1 ms: raised to it
    with_period(tiny, 20_000)
    assert tiny["linux"]["resources"]["cpu"]["quota"] == 1000


def test_a_container_without_a_limit_is_left_as_it_is():
    for config in ({}, {"linux": {}}, oci(None), oci(-1), oci(2000, period=20_000)):
        before = json.dumps(config)
        assert not with_period(config, 20_000)
        assert json.dumps(config) == before


def test_the_bundle_is_found_only_on_create_and_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bundle_of(["--root", "/r", "--log", "x", "create", "--bundle", "/b", "id"]) \
        .as_posix() == "/b"
    assert bundle_of(["create", "--bundle=/c", "id"]).as_posix() == "/c"
    assert bundle_of(["run", "-b", "/d", "id"]).as_posix() == "/d"
    assert bundle_of(["create", "id"]) == tmp_path          # runc's default: this folder
    assert bundle_of(["--root", "/r", "start", "id"]) is None
    assert bundle_of(["delete", "--force", "id"]) is None


def test_create_rewrites_the_bundle_then_runs_runc_with_the_same_arguments(tmp_path,
                                                                          monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps(oci(10_000)))
    ran = []
    monkeypatch.setattr("os.execv", lambda path, argv: ran.append((path, argv)))
    args = ["--root", "/r", "create", "--bundle", str(tmp_path), "cid"]
    main(["/usr/bin/runc", "20000", *args])
    assert json.loads((tmp_path / "config.json").read_text())["linux"]["resources"]["cpu"][
        "quota"] == 2000
    assert ran == [("/usr/bin/runc", ["/usr/bin/runc", *args])]


def test_the_wrapper_runs_this_file_with_runc_and_the_period(tmp_path):
    text = wrapper_text("/usr/bin/python3", "/usr/sbin/runc", 20_000)
    assert text.startswith("#!/bin/sh\n")
    assert "slot_runtime.py /usr/sbin/runc 20000 \"$@\"" in text
    path = tmp_path / "w"
    path.write_text(text)
    assert not path.stat().st_mode & stat.S_IXUSR      # the lab sets the mode (engines)
