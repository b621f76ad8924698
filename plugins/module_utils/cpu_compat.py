# -*- coding: utf-8 -*-
# Copyright (c) fleetmaint.libvirt contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can a host run a VM's CPU definition? Pure reading of libvirt domain capabilities.

libvirt's ``getDomainCapabilities`` says, for one emulator, machine and virt type, which
named CPU models the host can run (``usable``) and what its ``host-model`` CPU offers.
From that alone (recorded XML in tests, or fetched live) we decide whether a VM's guest CPU
can run on a host, naming the model or the features that are missing. Live work also asks
libvirt itself (``compareHypervisorCPU``); either saying no is a blocker.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterable, List, Optional


def parse_domain_capabilities(xml: str) -> Dict[str, Any]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"cannot parse domain capabilities XML: {exc}") from exc
    out: Dict[str, Any] = {
        "machine": root.findtext("machine"), "arch": root.findtext("arch"), "domain": root.findtext("domain"),
        "host_passthrough": False, "host_model": None, "custom_models": {},
    }
    for mode in root.findall("cpu/mode"):
        name, supported = mode.get("name"), mode.get("supported") == "yes"
        if name == "host-passthrough":
            out["host_passthrough"] = supported
        elif name == "host-model" and supported:
            model = mode.find("model")
            out["host_model"] = {
                "model": model.text if model is not None else None,
                "vendor": mode.findtext("vendor"),
                "features": sorted(f.get("name") for f in mode.findall("feature")
                                   if f.get("policy") in ("require", "force")),
                "disabled": sorted(f.get("name") for f in mode.findall("feature") if f.get("policy") == "disable"),
            }
        elif name == "custom" and supported:
            for m in mode.findall("model"):
                if m.text:
                    out["custom_models"][m.text] = m.get("usable", "unknown")
    return out


def cpu_runnable(vm_cpu: Dict[str, Any], caps: Dict[str, Any]) -> Dict[str, Any]:
    """Whether a VM's ``cpu`` (as parse_domain returns it) can run on the host described by ``caps``.

    Returns ``{"compatible": True|False|None, "reason": str, "missing_features": [...]}``;
    None means the definition is not something this check can judge.
    """
    mode = vm_cpu.get("mode")
    if mode is None:
        return {"compatible": True, "reason": "default CPU model", "missing_features": []}
    if mode == "host-passthrough":
        if not caps.get("host_passthrough"):
            return {"compatible": False, "reason": "host-passthrough is not supported on the destination",
                    "missing_features": []}
        return {"compatible": None, "reason": "host-passthrough migrates only between identical hosts",
                "missing_features": []}
    if mode == "host-model":
        return {"compatible": caps.get("host_model") is not None,
                "reason": "host-model is expanded at start; a running VM migrates with its expanded CPU",
                "missing_features": []}
    model = vm_cpu.get("model")
    # Domain capabilities list the host-model's features beyond its base model, and those it
    # disables; a base model's own features are not listed. So the only feature a capabilities
    # document proves missing is one the host explicitly disables; libvirt's live comparison
    # (compareHypervisorCPU) judges the rest.
    disabled = set((caps.get("host_model") or {}).get("disabled", []))
    required = [f["name"] for f in vm_cpu.get("features", []) if f.get("policy", "require") in ("require", "force")]
    missing = sorted(f for f in required if f in disabled)
    usable = caps.get("custom_models", {}).get(model) if model else "yes"
    host_model = caps.get("host_model") or {}
    vm_disabled = {f["name"] for f in vm_cpu.get("features", []) if f.get("policy") in ("disable", "forbid")}
    if usable != "yes" and model and model == host_model.get("model") and disabled <= vm_disabled:
        # A model can be unusable as a whole yet run with what the host lacks disabled: that is
        # the host-model CPU itself (and what a baseline of such hosts looks like).
        return {"compatible": True, "reason": f"CPU model {model} with the features the host lacks disabled, "
                "as the host's own host-model CPU", "missing_features": []}
    if usable is None:
        return {"compatible": False, "reason": f"CPU model {model} is unknown to the destination",
                "missing_features": missing}
    if usable == "no":
        return {"compatible": False, "reason": f"CPU model {model} is not usable on the destination",
                "missing_features": missing}
    if missing:
        return {"compatible": False, "reason": f"the destination lacks required CPU features: {', '.join(missing)}",
                "missing_features": missing}
    return {"compatible": True, "reason": f"CPU model {model or 'default'} is usable", "missing_features": []}


def merge_cpu_verdicts(*verdicts: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """One verdict from several (capabilities reading, libvirt's comparison): any 'no' wins."""
    seen = [v for v in verdicts if v]
    if not seen:
        return None
    noes = [v for v in seen if v.get("compatible") is False]
    if noes:
        return {"compatible": False, "reason": "; ".join(dict.fromkeys(v["reason"] for v in noes)),
                "missing_features": sorted({f for v in noes for f in v.get("missing_features", [])})}
    if all(v.get("compatible") is True for v in seen):
        return {"compatible": True, "reason": seen[0]["reason"], "missing_features": []}
    return {"compatible": None, "reason": "; ".join(v["reason"] for v in seen), "missing_features": []}


def fleet_usable_models(caps_list: Iterable[Dict[str, Any]]) -> List[str]:
    """Named CPU models every host can run: the safe choices for a VM that may go anywhere."""
    sets = [{m for m, u in c.get("custom_models", {}).items() if u == "yes"} for c in caps_list]
    return sorted(set.intersection(*sets)) if sets else []


def host_model_cpu_xml(domcaps_xml: str) -> Optional[str]:
    """The host-model CPU of a domain capabilities document, as a <cpu> for the baseline API."""
    root = ET.fromstring(domcaps_xml)
    mode = root.find("cpu/mode[@name='host-model']")
    if mode is None or mode.get("supported") != "yes":
        return None
    cpu = ET.Element("cpu", {"mode": "custom", "match": "exact"})
    for child in mode:
        cpu.append(child)
    return ET.tostring(cpu, encoding="unicode")


def parse_cpu_xml(cpu_xml: str) -> Dict[str, Any]:
    """A standalone <cpu> document (such as a baseline) as mode, model, vendor and features."""
    cpu = ET.fromstring(cpu_xml)
    model = cpu.find("model")
    return {
        "mode": cpu.get("mode", "custom"),
        "model": model.text if model is not None else None,
        "vendor": cpu.findtext("vendor"),
        "features": [{"name": f.get("name"), "policy": f.get("policy", "require")} for f in cpu.findall("feature")],
    }


def replace_domain_cpu(domain_xml: str, cpu_xml: str) -> str:
    """The domain definition with its <cpu> replaced by ``cpu_xml`` (inserted after <vcpu> if absent)."""
    root = ET.fromstring(domain_xml)
    new = ET.fromstring(cpu_xml)
    new.set("check", "partial")
    old = root.find("cpu")
    if old is not None:
        # Keep the guest topology and NUMA layout: only the model and features change.
        for keep in ("topology", "numa", "cache"):
            el = old.find(keep)
            if el is not None:
                new.append(el)
        root[list(root).index(old)] = new
    else:
        vcpu = root.find("vcpu")
        root.insert(list(root).index(vcpu) + 1 if vcpu is not None else len(root), new)
    return ET.tostring(root, encoding="unicode")
