"""Which GGUF the app serves: the one whose measured loss holds the serving bar, not the one named in the config.

    bar        top-1 agreement with the merged student >= export.serve_min_agreement and KL(student || file)
               <= export.serve_max_kl nats per token, both from the parity report (export/parity.py), chat
               template identical
    preferred  export.quant is served when it holds the bar
    else       the smallest file written that holds it (a warning says the preference was overruled)
    none       the file closest to the student (lowest KL) is served, and the warning says no file held the bar

Why not trust the name: on the 135M student Q4_K_M kept 92.4% agreement (KL 0.081) and lost a third of what the
student knew on new wordings, while Q8_0 (99.0%, 0.0013) kept it all. Which type holds depends on the model and its
training, so it is measured per export, not assumed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ServingBar:
    min_agreement: float     # top-1 agreement with the merged student, 0..1
    max_kl: float            # nats per token

    def holds(self, report: dict) -> bool:
        return bool(report.get("template_ok")) and report.get("agreement", 0.0) >= self.min_agreement \
            and report.get("kl", float("inf")) <= self.max_kl

    def describe(self) -> str:
        return f"top-1 agreement >= {self.min_agreement:.0%} and KL <= {self.max_kl:g} nats/token"


@dataclass(frozen=True)
class ServedChoice:
    quant: str               # the GGUF type served
    holds_bar: bool          # whether it holds the bar (False: nothing written did)
    overruled: bool          # the preferred type was not served
    reason: str              # one sentence for the log, parity.md and the report

    def to_dict(self) -> dict:
        return asdict(self)


def _measured(quant: str, report: dict) -> str:
    return f"{quant}: agreement {report['agreement']:.1%}, KL {report['kl']:.4f}"


def choose_served(reports: dict[str, dict], preferred: str, bar: ServingBar) -> ServedChoice:
    """`reports`: {GGUF type: its parity report (agreement, kl, bytes, template_ok)}, the preferred type among them.
    Without reports (parity off) the preferred type is served, unmeasured."""
    if not reports:
        return ServedChoice(preferred, holds_bar=False, overruled=False,
                            reason=f"{preferred} serves as configured: parity was not measured, so no file was "
                                   f"checked against the bar ({bar.describe()})")
    if preferred not in reports:
        raise ValueError(f"the preferred type {preferred} has no parity report")
    if bar.holds(reports[preferred]):
        return ServedChoice(preferred, True, False,
                            f"{preferred} serves: it holds the bar ({bar.describe()}); {_measured(preferred, reports[preferred])}")
    holding = sorted((r["bytes"], quant) for quant, r in reports.items() if bar.holds(r))
    if holding:
        quant = holding[0][1]
        return ServedChoice(quant, True, True,
                            f"{quant} serves instead of the preferred {preferred}: the smallest file that holds the bar "
                            f"({bar.describe()}); {_measured(quant, reports[quant])}; "
                            f"{_measured(preferred, reports[preferred])}")
    # a file that renders another chat prompt is never the closest: it answers other questions than it is asked
    candidates = [q for q, r in reports.items() if r.get("template_ok")] or list(reports)
    closest = min(candidates, key=lambda q: (reports[q]["kl"], -reports[q]["agreement"]))
    return ServedChoice(closest, False, closest != preferred,
                        f"no file written holds the bar ({bar.describe()}): {closest} serves as the closest to the "
                        f"student ({'; '.join(_measured(q, r) for q, r in reports.items())}). Add a larger type to "
                        f"export.more_quants (Q8_0 or f16)")
