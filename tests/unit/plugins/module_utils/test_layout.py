"""module_utils keeps its layers (docs/README.md, Layout): pure files import neither libvirt nor Ansible nor
a libvirt-layer file; libvirt-layer files import no Ansible; every file is in the table."""

import ast
import pathlib

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import reasons

HERE = pathlib.Path(reasons.__file__).resolve().parent
PURE = {"reasons", "options", "errors", "redaction", "migration_rules", "cpu_compat", "libvirt_xml",
        "precopy_estimate", "move_methods", "placement", "report", "files", "fence_records", "report_store",
        "move_log", "timeline", "cancel", "rebalance"}
LIBVIRT = {"libvirt_connection", "hypervisor_facts", "migration_checks", "maintenance", "fleet", "live_migration",
           "domains", "migration_flags", "vm_profile", "migration_job", "postcopy_recovery", "cold_move",
           "move_scheduler", "host_jobs", "probes", "failover", "failback", "health", "backups",
           "cpu_baseline", "fleet_jobs"}
ANSIBLE = {"module_runner"}
PREFIX = "ansible_collections.fleetmaint.libvirt.plugins.module_utils."


def imports(path):
    """(collection module_utils files, other top-level packages) a file imports, anywhere in it."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for n in names:
            if n.startswith(PREFIX):
                ours.add(n[len(PREFIX):].split(".")[0])
            else:
                others.add(n.split(".")[0])
    return ours, others


def test_every_file_is_in_one_layer_and_the_docs_table():
    files = {p.stem for p in HERE.glob("*.py") if p.stem != "__init__"}
    assert files == PURE | LIBVIRT | ANSIBLE, files ^ (PURE | LIBVIRT | ANSIBLE)
    docs = (HERE.parents[1] / "docs" / "README.md").read_text()
    assert all(f"`{f}.py`" in docs for f in files), [f for f in files if f"`{f}.py`" not in docs]


def test_layers_only_import_downwards():
    for f in sorted(HERE.glob("*.py")):
        if f.stem == "__init__":
            continue
        ours, others = imports(f)
        if f.stem in PURE:
            assert ours <= PURE, f"{f.name} (pure) imports {ours - PURE}"
            assert not others & {"libvirt", "ansible"}, f"{f.name} (pure) imports {others & {'libvirt', 'ansible'}}"
        elif f.stem in LIBVIRT:
            assert ours <= PURE | LIBVIRT, f"{f.name} imports {ours - PURE - LIBVIRT}"
            assert "ansible" not in others, f"{f.name} (libvirt layer) imports Ansible"
