"""Training objectives as pure functions of per-token log-probabilities, masks and rewards.

Every trainer in student/ computes `token_logps` (log pi(o_t | q, o_<t) at each completion position, [batch, T])
and a `mask` of the positions that count, then calls one of these. Nothing here touches a model, so each objective
is pinned by tests against hand-computed values and the papers' invariants (docs/algorithms.md sections 1-5;
tests/test_objectives.py).

    SFT, answer-first     Chen et al., arXiv 2404.09170 (post-thinking), with optional hardness weighting
    DPO                   Rafailov et al., arXiv 2305.18290
    GRAO                  arXiv 2508.07750, Eq. 2-4, the reference answer inside the normalisation group
    pass@k, max@k, maj@k  Tang, Zheng, Synnaeve, Munos, arXiv 2503.19595: leave-one-out advantages, the centred
                          variant, and the mean objective whose advantage is RLOO's divided by k
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
import torch.nn.functional as F


# -- §1: sequence log-likelihoods ---------------------------------------------------------------------------------

def sequence_logp(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi(o | q) = sum over the response's tokens (what DPO compares)."""
    return (token_logps * mask).sum(-1)


def mean_logp(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """l(o | q) = (1/|o|) sum_t log pi(o_t | q, o_<t): length-normalised (what GRAO compares)."""
    return sequence_logp(token_logps, mask) / mask.sum(-1).clamp(min=1)


# -- SFT ------------------------------------------------------------------------------------------------------------

def hardness_weights(token_logps: torch.Tensor, rationale_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-example weights w_i = max(0, 1 + alpha (z_i - 1)), z_i = rationale NLL_i / batch mean (detached).

    Our reading of the answer-first "error amplifier" (docs/algorithms.md#2-answer-first-sft-post-thinking): an
    example whose rationale the student finds hard weighs more. Normalised so the batch's mean weight is 1 (the
    learning rate keeps its meaning); alpha = 0 gives plain SFT. An extension, not the paper's formula, which was
    not recoverable."""
    nll = -mean_logp(token_logps.detach(), rationale_mask)
    z = nll / nll.mean().clamp(min=1e-8)
    return (1 + alpha * (z - 1)).clamp(min=0)


def answer_first_loss(token_logps: torch.Tensor, answer_mask: torch.Tensor, rationale_mask: torch.Tensor,
                      rationale_weight: float = 1.0, hardness: float = 0.0, weight: torch.Tensor | None = None,
                      denominator: float | None = None) -> torch.Tensor:
    """L_post = -sum log p(answer tokens) - lambda_r sum log p(rationale tokens | answer), per completion token.

    The answer comes first, so its tokens are conditioned on the question only: with lambda_r = 0 this is exactly
    answer-only fine-tuning; the rationale term adds gradient through the shared states (Chen et al.;
    docs/algorithms.md#2-answer-first-sft-post-thinking).
    `hardness` = alpha of `hardness_weights`; `weight`: per-example weights given with the data. Divided by the
    weighted token count (answer tokens + lambda_r x rationale tokens): lambda_r = 1 is the ordinary token-mean SFT
    loss on the whole completion (as TRL's: an example counts in proportion to its length; the rationale-first
    baseline is this on rationale-first targets), lambda_r = 0 answer-only SFT, exactly. `denominator` replaces
    that count when the batch is one process's slice of a larger one (data-parallel training normalises by the
    global count)."""
    if hardness:
        hard = hardness_weights(token_logps, rationale_mask, hardness)
        weight = hard if weight is None else weight * hard
    per_token = answer_mask + rationale_weight * rationale_mask
    nll = -token_logps * per_token
    if weight is not None:
        nll = nll * weight[:, None]
    return nll.sum() / (denominator if denominator is not None else per_token.sum().clamp(min=1e-8))


# -- DPO ------------------------------------------------------------------------------------------------------------

def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """-log sigmoid(beta [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]), mean over pairs.

    Arguments are summed sequence log-probabilities [pairs]. The reference's are computed once, before training,
    and stored with the data (they never change), so a step runs one model, not two."""
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(beta * margin).mean()


# -- GRAO -----------------------------------------------------------------------------------------------------------

def grao_advantages(rewards: torch.Tensor, reference_reward: float | torch.Tensor, eps: float = 1e-6
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_o [.., G], A_y [..]): rewards normalised over the group of the G samples and the reference answer y.

    Our choice (docs/algorithms.md#4-grao): y is inside the group (R(y, y) = 1 for a verifier), so when every
    sample is wrong A_y > 0 and imitation switches on; population std; a group whose G+1 rewards are all equal
    gets zeros."""
    reference = torch.as_tensor(reference_reward, dtype=rewards.dtype).expand(rewards.shape[:-1])[..., None]
    group = torch.cat([rewards, reference], dim=-1)
    mean, std = group.mean(-1, keepdim=True), group.std(-1, unbiased=False, keepdim=True)
    advantages = torch.where(std > 0, (group - mean) / (std + eps), torch.zeros_like(group))
    return advantages[..., :-1], advantages[..., -1]


def grao_loss(sample_logps: torch.Tensor, reference_logp: torch.Tensor, sample_advantages: torch.Tensor,
              reference_advantage: torch.Tensor, beta: float = 0.5, lam: float = 0.6) -> torch.Tensor:
    """-J_GRAO, J = (1/G) sum_i [A_i l(o_i) + beta A_y l(y) + lam A_i (l(o_i) - l(y))], mean over prompts.

    `sample_logps` [.., G] and `reference_logp` [..] are length-normalised (mean_logp). No ratio, clip or KL: the
    paper has none; samples are drawn from the current policy and used for one step."""
    A, Ay = sample_advantages.detach(), reference_advantage.detach()
    l_y = reference_logp[..., None]
    per_sample = A * sample_logps + beta * Ay[..., None] * l_y + lam * A * (sample_logps - l_y)
    return -per_sample.mean(-1).mean()


# -- inference-time objectives: pass@k, max@k, maj@k, mean --------------------------------------------------------

OBJECTIVES = ("pass", "max", "maj", "mean")


def aggregate(objective: str, rewards: Sequence[float], answers: Sequence | None = None) -> float:
    """f(y_1..y_n) for n >= 0 samples; f of no samples is 0 (so k = 1 is plain REINFORCE).

    pass and max: the best reward (pass@k for 0/1 rewards); mean: the average; maj: the reward of the most frequent
    valid answer (None votes for nothing), ties broken by expectation: the mean reward of the tied answers, which
    is deterministic and needs no random draw (docs/algorithms.md#5-inference-time-objectives)."""
    if not len(rewards):
        return 0.0
    if objective in ("pass", "max"):
        return float(max(rewards))
    if objective == "mean":
        return float(sum(rewards)) / len(rewards)
    if objective != "maj":
        raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    reward_of = {a: r for a, r in zip(answers, rewards) if a is not None}
    tied = [a for a, n in votes.items() if n == top]
    return sum(reward_of[a] for a in tied) / len(tied)


def loo_advantages(objective: str, rewards: Sequence[float], answers: Sequence | None = None,
                   centred: bool = False) -> list[float]:
    """A_i = f(y_1..y_k) - f(y_-i): sample i's marginal contribution (an unbiased gradient of E f over k samples).

    centred: A_i - mean_j A_j, zero-sum and lower variance, whose expectation is the gradient of the (k-1)-sample
    objective (docs/algorithms.md#5-inference-time-objectives). Closed forms that follow: pass@k gives 1 to a
    sample only when it is the only correct one; mean gives (r_i - mean_{j != i} r_j) / k, RLOO's advantage over
    k."""
    answers = list(answers) if answers is not None else [None] * len(rewards)
    whole = aggregate(objective, rewards, answers)
    advantages = [whole - aggregate(objective, [r for j, r in enumerate(rewards) if j != i],
                                    [a for j, a in enumerate(answers) if j != i]) for i in range(len(rewards))]
    if centred:
        mean = sum(advantages) / len(advantages)
        advantages = [a - mean for a in advantages]
    return advantages


def policy_gradient_loss(sequence_logps: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-sum_i A_i log pi(y_i), averaged over prompts: its gradient is the estimator sum_i A_i grad log pi(y_i).
    `sequence_logps` and `advantages` are [prompts, k]; advantages are constants."""
    return -(advantages.detach() * sequence_logps).sum(-1).mean()
