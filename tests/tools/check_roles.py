"""make lint: each role's defaults agree with its meta/argument_specs.yml, and a role that wraps a module
passes every option of that module, from a variable of its own, in every task that calls it; any other role
that calls a wrapped module directly (a rescue step, say) passes every option too.

Exit 1 naming each disagreement. Run with the collection importable (ANSIBLE_COLLECTIONS_PATH or sys.path).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

import yaml
from ansible.module_utils import basic

ROOT = Path(__file__).resolve().parents[2]
# role -> the module it wraps (its variables are <role>_<option>)
WRAPS = {"host_evacuate": "host_evacuate", "host_restore": "host_restore", "fleet_rebalance": "fleet_rebalance"}


def module_spec(name: str) -> dict:
    class Captured(Exception):
        pass

    def capture(self, *args, **kwargs):
        raise Captured(kwargs.get("argument_spec", args[0] if args else None))

    orig = basic.AnsibleModule.__init__
    basic.AnsibleModule.__init__ = capture
    try:
        importlib.import_module(f"ansible_collections.fleetmaint.libvirt.plugins.modules.{name}").main()
    except Captured as got:
        return got.args[0]
    finally:
        basic.AnsibleModule.__init__ = orig
    raise RuntimeError(f"{name}.main() built no AnsibleModule")


def tasks_in(items):
    """Every task of a tasks file, those inside block, rescue and always too."""
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks_in(task.get(key))


def templated(value) -> bool:
    return isinstance(value, str) and "{{" in value


def check_role(role: Path) -> list:
    errors = []
    spec_file = role / "meta" / "argument_specs.yml"
    if not spec_file.exists():
        return [f"{role.name}: no meta/argument_specs.yml"]
    specs = yaml.safe_load(spec_file.read_text())["argument_specs"]
    options = {}
    for entry in specs.values():
        options.update(entry.get("options") or {})
    dfile = role / "defaults" / "main.yml"
    defaults = (yaml.safe_load(dfile.read_text()) or {}) if dfile.exists() else {}
    for var, value in defaults.items():
        if var not in options:
            errors.append(f"{role.name}: defaults/main.yml sets {var}, which meta/argument_specs.yml does not document")
            continue
        if "default" in options[var]:
            if options[var]["default"] != value:
                errors.append(f"{role.name}: {var} defaults to {value!r} in defaults/main.yml but "
                              f"{options[var]['default']!r} in meta/argument_specs.yml")
        elif not templated(value):
            errors.append(f"{role.name}: {var} defaults to {value!r} in defaults/main.yml; "
                          "meta/argument_specs.yml gives no default")
    for var, opt in options.items():
        if "default" in opt and var not in defaults:
            errors.append(f"{role.name}: meta/argument_specs.yml gives {var} a default that defaults/main.yml lacks")
    for tf in sorted((role / "tasks").glob("*.yml")):
        for task in tasks_in(yaml.safe_load(tf.read_text())):
            for wrapper, wrapped in WRAPS.items():
                args = task.get(f"fleetmaint.libvirt.{wrapped}")
                if args is None or wrapper == role.name:
                    continue
                for missing in sorted(set(module_spec(wrapped)) - set(args)):
                    errors.append(f"{role.name}/tasks/{tf.name} '{task.get('name')}': calls {wrapped} without "
                                  f"option {missing} (pass {wrapper}_{missing} | default(omit))")
    module = WRAPS.get(role.name)
    if module:
        mspec = module_spec(module)
        calls = 0
        for tf in sorted((role / "tasks").glob("*.yml")):
            for task in yaml.safe_load(tf.read_text()) or []:
                args = task.get(f"fleetmaint.libvirt.{module}")
                if args is None:
                    continue
                calls += 1
                where = f"{role.name}/tasks/{tf.name} '{task.get('name')}'"
                for missing in sorted(set(mspec) - set(args)):
                    errors.append(f"{where}: does not pass {module} option {missing}")
                for opt, value in args.items():
                    var = f"{role.name}_{opt}"
                    if not re.fullmatch(r"\{\{ " + var + r"( \| default\(omit\))? \}\}", str(value)):
                        errors.append(f"{where}: {opt} should be \"{{{{ {var} }}}}\", is {value!r}")
                    if var not in options:
                        errors.append(f"{where}: {var} is not in meta/argument_specs.yml")
                    mdef = mspec.get(opt, {}).get("default")
                    if var in defaults and not templated(defaults[var]) and mdef is not None and defaults[var] != mdef:
                        errors.append(f"{role.name}: {var} defaults to {defaults[var]!r}, the module's {opt} to {mdef!r}")
        if not calls:
            errors.append(f"{role.name}: no task calls fleetmaint.libvirt.{module}")
    return errors


def main() -> int:
    for p in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(":"):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    errors = []
    for role in sorted((ROOT / "roles").iterdir()):
        if role.is_dir():
            errors += check_role(role)
    for e in errors:
        print(f"check_roles: {e}")
    print(f"check_roles: {len(list((ROOT / 'roles').iterdir()))} roles, {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
