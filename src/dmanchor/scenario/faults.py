"""Faults a scenario injects into the control network (issue 16): a cut
link, and random loss of control messages - with ip6tables in the lab's
namespaces (the kernel here has no netem), removed exactly as added.

A cut drops everything crossing the link both ways, at both ends; the
carrier stays (a fibre broken behind a switch), so the cut heals by
removing the rules - a link set down would lose its addresses and routes.
Loss drops each control message arriving at a node (requests and answers
alike: both go to a node's control ports) with the given probability.
"""

from __future__ import annotations

from ..emulation.lab import Lab
from .plan import CTRL_PORT, LMP_PORT, Plan

TAG = "dmanchor-fault"
"""The comment on every rule added here (``ip6tables -S`` shows whose it is)."""


def _cut_rules(plan: Plan, a: str, b: str) -> list[tuple[str, list[str]]]:
    """(node, rule) for each end of the link ``a``-``b``."""
    out = []
    for x, y in ((a, b), (b, a)):
        iface = next((i.name for i in plan.nodes[x].ifaces if i.peer == y), None)
        if iface is None:
            raise ValueError(f"no link {a}-{b}")
        for chain, way in (("INPUT", "-i"), ("OUTPUT", "-o"), ("FORWARD", "-i"),
                           ("FORWARD", "-o")):
            out.append((x, [chain, way, iface, "-m", "comment", "--comment", TAG, "-j", "DROP"]))
    return out


def cut(lab: Lab, plan: Plan, a: str, b: str, on: bool) -> None:
    """Cut the link ``a``-``b`` (``on``), or heal it."""
    for node, rule in _cut_rules(plan, a, b):
        lab.run(node, "ip6tables", "-w", "-I" if on else "-D", *rule, check=on)


def _loss_rule(probability: float) -> list[str]:
    return ["INPUT", "-p", "udp", "--dport", f"{CTRL_PORT}:{LMP_PORT}", "-m", "statistic",
            "--mode", "random", "--probability", f"{probability:.4f}",
            "-m", "comment", "--comment", TAG, "-j", "DROP"]


class ControlLoss:
    """Random loss on every node's control ports, changed as a run goes."""

    def __init__(self, lab: Lab, nodes: list[str]) -> None:
        """``nodes``: those running a node process (their control ports)."""
        self.lab = lab
        self.nodes = nodes
        self.probability = 0.0

    def set(self, percent: float) -> None:
        """Drop ``percent`` of the control messages arriving at each node."""
        for node in self.nodes:
            if self.probability:
                self.lab.run(node, "ip6tables", "-w", "-D", *_loss_rule(self.probability))
            if percent:
                self.lab.run(node, "ip6tables", "-w", "-I", *_loss_rule(percent / 100))
        self.probability = percent / 100
