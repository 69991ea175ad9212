"""Container memory limits, read from fake cgroup trees (real limits cannot be set on this machine)."""

import psutil
import pytest

from vlm_lab.cgroup_memory import available_memory

MiB = 1 << 20
V1_NO_LIMIT = "9223372036854771712"


def tree(root, proc_self_cgroup, files):
    (root / "proc-self-cgroup").write_text(proc_self_cgroup)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return {"cgroup_root": root / "fs", "proc_self_cgroup": root / "proc-self-cgroup"}


@pytest.mark.parametrize("proc_self_cgroup, files, limit, available", [
    # cgroup v2 in a container with its own cgroup namespace (Docker, a Space): its cgroup is "/"
    ("0::/\n", {"fs/memory.max": "1073741824\n", "fs/memory.current": "209715200\n",
                "fs/memory.stat": "anon 100\ninactive_file 104857600\nactive_file 5\n"}, 1024 * MiB, 1024 * MiB - 100 * MiB),
    # cgroup v2, limited by an ancestor (a systemd slice), none on its own cgroup
    ("0::/user.slice/app.scope\n", {"fs/user.slice/memory.max": "536870912\n", "fs/user.slice/memory.current": "0\n",
                                    "fs/user.slice/app.scope/memory.max": "max\n"}, 512 * MiB, 512 * MiB),
    # the tighter of two limits counts
    ("0::/a/b\n", {"fs/a/memory.max": str(2048 * MiB), "fs/a/memory.current": str(100 * MiB),
                   "fs/a/b/memory.max": str(1024 * MiB), "fs/a/b/memory.current": str(1000 * MiB)}, 1024 * MiB, 24 * MiB),
    # cgroup v1 without a cgroup namespace: told /docker/<id>, its own cgroup mounted at the controller's root
    ("12:pids:/docker/abc\n4:cpu,memory:/docker/abc\n0::/\n",
     {"fs/memory/memory.limit_in_bytes": str(768 * MiB), "fs/memory/memory.usage_in_bytes": str(300 * MiB),
      "fs/memory/memory.stat": f"cache 0\ninactive_file {10 * MiB}\ntotal_inactive_file {200 * MiB}\n"},
     768 * MiB, 668 * MiB),
    # usage past the limit (cache not yet reclaimed): no room, not a negative amount
    ("0::/\n", {"fs/memory.max": str(256 * MiB), "fs/memory.current": str(300 * MiB)}, 256 * MiB, 0),
])
def test_a_container_limit_below_the_machines_memory_is_what_is_available(tmp_path, proc_self_cgroup, files, limit, available):
    memory = available_memory(**tree(tmp_path, proc_self_cgroup, files))
    assert (memory.limit, memory.available) == (limit, available)


@pytest.mark.parametrize("proc_self_cgroup, files", [
    ("0::/\n", {"fs/memory.max": "max\n"}),  # v2, no limit
    ("4:memory:/\n", {"fs/memory/memory.limit_in_bytes": V1_NO_LIMIT}),  # v1, no limit
    ("0::/\n", {"fs/memory.max": str(1 << 50)}),  # a limit above the machine's memory
    ("0::/\n", {}),  # no cgroup files (not mounted, or hidden)
    ("", {}),  # no cgroups at all
])
def test_without_a_limit_below_it_the_machines_available_memory_counts(tmp_path, proc_self_cgroup, files):
    memory = available_memory(**tree(tmp_path, proc_self_cgroup, files))
    assert memory.limit is None
    assert abs(memory.available - psutil.virtual_memory().available) < 512 * MiB  # the machine's, give or take other work


def test_no_proc_file_is_the_machines_memory(tmp_path):
    memory = available_memory(cgroup_root=tmp_path, proc_self_cgroup=tmp_path / "missing")
    assert memory.limit is None and memory.available > 0
