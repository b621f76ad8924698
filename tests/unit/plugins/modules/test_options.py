"""Shared options are declared once (module_utils/options.py) and documented once (doc_fragments/): every module's
documented options, defaults, types and choices equal its argument spec's, and the action groups hold exactly the
modules that share their options."""

import importlib
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

from ansible_collections.fleetmaint.libvirt.plugins.module_utils import options
# The argument spec main() gives AnsibleModule, read as make lint's role check reads it.
from ansible_collections.fleetmaint.libvirt.tests.tools.check_roles import module_spec

ROOT = pathlib.Path(options.__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


def documented_options(name):
    """The module's DOCUMENTATION options with its doc fragments merged in (the module's own win)."""
    mod = importlib.import_module(f"ansible_collections.fleetmaint.libvirt.plugins.modules.{name}")
    doc = yaml.safe_load(mod.DOCUMENTATION)
    opts = {}
    for frag in doc.get("extends_documentation_fragment") or []:
        parts = frag.split(".")
        assert parts[:2] == ["fleetmaint", "libvirt"], frag
        fmod = importlib.import_module(f"ansible_collections.fleetmaint.libvirt.plugins.doc_fragments.{parts[2]}")
        text = getattr(fmod.ModuleDocFragment, parts[3].upper() if len(parts) > 3 else "DOCUMENTATION")
        opts.update((yaml.safe_load(text) or {}).get("options") or {})
    opts.update(doc.get("options") or {})
    return opts


def _norm(value):
    return None if value in (None, [], {}) and value is not False else value


@pytest.mark.parametrize("name", MODULES)
def test_documented_options_equal_the_argument_spec(name):
    spec = module_spec(name)
    docs = documented_options(name)
    assert set(docs) == set(spec), f"{name}: documented but not taken {set(docs) - set(spec)}, " \
                                   f"taken but not documented {set(spec) - set(docs)}"
    for opt, s in spec.items():
        d = docs[opt]
        assert d.get("type", "str") == s.get("type", "str"), f"{name}.{opt} type"
        assert _norm(d.get("default")) == _norm(s.get("default")), \
            f"{name}.{opt}: documented default {d.get('default')!r}, spec default {s.get('default')!r}"
        assert d.get("choices") == s.get("choices"), f"{name}.{opt} choices"
        assert bool(d.get("required")) == bool(s.get("required")), f"{name}.{opt} required"


# Where a module means something else by a shared name, said here on purpose.
OWN_MEANING = {("host_probe", "uri"): "the host to probe, required: a probe has no local default"}


@pytest.mark.parametrize("name", MODULES)
def test_a_shared_option_is_the_one_declaration_wherever_it_is_taken(name):
    spec = module_spec(name)
    for opt, s in spec.items():
        if opt in options.OPTIONS and (name, opt) not in OWN_MEANING:
            assert s == options.OPTIONS[opt], f"{name}.{opt} is declared again, differently: {s}"


def test_the_action_groups_hold_exactly_the_modules_that_share_their_options():
    groups = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["action_groups"]
    specs = {m: module_spec(m) for m in MODULES}
    assert set(groups["storage"]) == {m for m, s in specs.items() if "shared_pools" in s}
    migration = set(options.STORAGE) | set(options.MIGRATION_TUNING) | {"memory_headroom"}
    assert groups["migration"] and all(migration <= set(specs[m]) for m in groups["migration"])
    assert set(groups["migration"]) == {m for m, s in specs.items() if migration <= set(s)}


def test_a_default_given_to_a_shared_option_reaches_preview_and_move_alike():
    plan, move = module_spec("plan_evacuation"), module_spec("host_evacuate")
    check, single = module_spec("migration_check"), module_spec("live_migrate")
    for opt in ("memory_headroom", "max_downtime", "bandwidth"):
        assert plan[opt] == move[opt] == check[opt] == single[opt], opt


@pytest.mark.parametrize("fragment,part", [("storage", "SHARED_POOLS"), ("placement", "HEADROOM")])
def test_a_partial_fragment_says_what_the_whole_fragment_says(fragment, part):
    # ansible-test reads doc fragments as literal strings, so a part is written twice: the same, always.
    frag = importlib.import_module(f"ansible_collections.fleetmaint.libvirt.plugins.doc_fragments.{fragment}")
    whole = yaml.safe_load(frag.ModuleDocFragment.DOCUMENTATION)["options"]
    for opt, doc in yaml.safe_load(getattr(frag.ModuleDocFragment, part))["options"].items():
        assert whole[opt] == doc, opt


PLAY = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/fleetmaint.libvirt.storage:
      shared_pools: [default-pool]
  tasks:
    - fleetmaint.libvirt.hypervisor_info:
        uri: test:///default
        probe_migration: false
      register: info
    - ansible.builtin.assert:
        that: "info.pools | selectattr('shared') | map(attribute='name') | list == ['default-pool']"
"""


def test_module_defaults_for_a_group_reach_its_modules(tmp_path):
    """What the README shows: a group default set once for the play reaches a module of the group."""
    pytest.importorskip("libvirt")
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    collections = ROOT.parents[2]  # the directory that holds ansible_collections/fleetmaint/libvirt
    res = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                          "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", str(play)],
                         capture_output=True, text=True, timeout=300, check=False,
                         env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "All assertions passed" in res.stdout
