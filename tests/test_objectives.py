"""The objectives pinned: hand-computed values and every invariant of docs/algorithms.md sections 1-5 that is a
property of a loss or an advantage (the model-level ones, early stopping and DPO on a model, are in test_train.py)."""
import math
from itertools import product

import pytest
import torch

from edgedistill.metrics import pass_at_k
from edgedistill.student.objectives import aggregate, answer_first_loss, dpo_loss, grao_advantages, grao_loss, \
    hardness_weights, loo_advantages, mean_logp, policy_gradient_loss, sequence_logp

# Two examples, four completion positions; the second has three tokens (the last position is padding).
LOGPS = torch.tensor([[-0.5, -1.0, -2.0, -0.1], [-0.2, -3.0, -0.7, -9.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.float64)
ANSWER = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float64)    # answer tokens come first
RATIONALE = MASK - ANSWER


# -- §1 and §2: log-likelihoods and SFT -------------------------------------------------------------------------

def test_sequence_and_mean_log_likelihood_by_hand():
    assert sequence_logp(LOGPS, MASK).tolist() == pytest.approx([-3.6, -3.9])
    assert mean_logp(LOGPS, MASK).tolist() == pytest.approx([-0.9, -1.3])


def test_length_normalisation_ignores_a_repeated_response():   # §1
    doubled = torch.cat([LOGPS[:1, :4], LOGPS[:1, :4]], dim=1)
    assert mean_logp(doubled, torch.ones_like(doubled)).item() == pytest.approx(mean_logp(LOGPS[:1], MASK[:1]).item())


def test_answer_first_loss_decomposes_into_answer_and_rationale_terms():   # §2
    answer_nll, rationale_nll = 1.5 + 0.2, 2.1 + 3.7                         # by hand from LOGPS
    # lambda_r = 1: the ordinary token-mean SFT loss of the whole completion (7 tokens, NLL 3.6 + 3.9)
    assert answer_first_loss(LOGPS, ANSWER, RATIONALE).item() == pytest.approx((answer_nll + rationale_nll) / 7)
    weights = torch.tensor([2.0, 0.5], dtype=torch.float64)                  # per-example weights scale each token
    assert answer_first_loss(LOGPS, ANSWER, RATIONALE, weight=weights).item() == pytest.approx(
        (2 * 3.6 + 0.5 * 3.9) / 7)
    # lambda_r = 0: answer-only fine-tuning, exactly (3 answer tokens)
    assert answer_first_loss(LOGPS, ANSWER, RATIONALE, rationale_weight=0.0).item() == pytest.approx(answer_nll / 3)
    assert answer_first_loss(LOGPS, ANSWER, RATIONALE, rationale_weight=0.5).item() == pytest.approx(
        (answer_nll + 0.5 * rationale_nll) / (3 + 0.5 * 4))


def test_hardness_weights_mean_one_favour_the_hard_rationale_and_carry_no_gradient():
    logps = LOGPS.clone().requires_grad_()
    weights = hardness_weights(logps, RATIONALE, alpha=0.5)
    # rationale NLL per example: 2.1/2 = 1.05 and 3.7/2 = 1.85; z = 1.05/1.45, 1.85/1.45
    assert weights.tolist() == pytest.approx([1 + 0.5 * (1.05 / 1.45 - 1), 1 + 0.5 * (1.85 / 1.45 - 1)])
    assert weights.mean().item() == pytest.approx(1.0) and not weights.requires_grad
    assert hardness_weights(LOGPS, RATIONALE, alpha=0.0).tolist() == [1.0, 1.0]
    weighted = answer_first_loss(LOGPS, ANSWER, RATIONALE, hardness=0.5).item()
    assert weighted == pytest.approx((weights[0] * 3.6 + weights[1] * 3.9).item() / 7)


# -- DPO (§3) ---------------------------------------------------------------------------------------------------

def test_dpo_is_log_two_when_the_policy_is_the_reference():
    chosen, rejected = torch.tensor([-12.0, -40.0]), torch.tensor([-15.0, -33.0])
    assert dpo_loss(chosen, rejected, chosen, rejected).item() == pytest.approx(math.log(2), abs=1e-7)


def test_dpo_by_hand_and_its_gradient_raises_chosen_and_lowers_rejected():
    chosen, rejected = torch.tensor([-10.0], requires_grad=True), torch.tensor([-14.0], requires_grad=True)
    loss = dpo_loss(chosen, rejected, torch.tensor([-11.0]), torch.tensor([-12.0]), beta=0.1)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.1 * (1.0 - (-2.0))))), abs=1e-6)
    loss.backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()    # descending the loss raises log pi(y_w), lowers y_l


# -- GRAO (§4) --------------------------------------------------------------------------------------------------

def grao_objective(l, l_y, A, A_y, beta, lam):
    """J by the linearity identity of docs/algorithms.md#4-grao."""
    return (1 + lam) * (A * l).mean() + (beta * A_y - lam * A.mean()) * l_y


def test_grao_equals_its_linearity_identity_for_random_values():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        l, A = -torch.rand(6, generator=generator, dtype=torch.float64) * 3, torch.randn(6, generator=generator,
                                                                                         dtype=torch.float64)
        l_y, A_y = -torch.rand((), generator=generator, dtype=torch.float64), torch.randn((), generator=generator,
                                                                                            dtype=torch.float64)
        assert grao_loss(l, l_y, A, A_y, beta=0.5, lam=0.6).item() == pytest.approx(
            -grao_objective(l, l_y, A, A_y, 0.5, 0.6).item(), abs=1e-12)


def test_grao_advantages_put_the_reference_in_the_group():
    A, A_y = grao_advantages(torch.tensor([0.0, 0.0, 1.0]), 1.0)       # group {0, 0, 1, 1}: mean 0.5, std 0.5
    assert A.tolist() == pytest.approx([-1, -1, 1], abs=1e-5) and A_y.item() == pytest.approx(1, abs=1e-5)
    A, A_y = grao_advantages(torch.tensor([0.0, 0.0, 0.0, 0.0]), 1.0)  # every sample wrong: imitation switches on
    assert A_y.item() > 0 and (A < 0).all()


def test_grao_constant_rewards_give_zero_advantages_and_zero_gradient():
    A, A_y = grao_advantages(torch.tensor([[1.0, 1.0, 1.0]]), 1.0)
    assert A.abs().sum().item() == 0 and A_y.abs().sum().item() == 0
    l, l_y = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True), torch.tensor([-0.5], requires_grad=True)
    grao_loss(l, l_y, A, A_y).backward()
    assert l.grad.abs().sum().item() == 0 and l_y.grad.abs().sum().item() == 0


@pytest.mark.parametrize("sample_reward,a", [(0.0, -1.0), (1.0, 1.0)])
def test_grao_one_sample_with_the_reference_is_push_pull(sample_reward, a):
    beta, lam = 0.5, 0.6
    A, A_y = grao_advantages(torch.tensor([sample_reward]), 1.0 - sample_reward)
    assert A.item() == pytest.approx(a, abs=1e-5) and A_y.item() == pytest.approx(-a, abs=1e-5)
    l, l_y = torch.tensor([-2.0]), torch.tensor(-1.0)
    assert grao_loss(l, l_y, A, A_y, beta, lam).item() == pytest.approx(
        -a * ((1 + lam) * -2.0 - (beta + lam) * -1.0), abs=1e-4)


def test_grao_without_beta_and_lambda_is_group_reinforce():
    l = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)
    A = torch.tensor([0.5, -1.5, 1.0, 0.0])
    grao_loss(l, torch.tensor(-1.0), A, torch.tensor(0.7), beta=0.0, lam=0.0).backward()
    assert l.grad.tolist() == pytest.approx((-A / 4).tolist())      # loss gradient = -(1/G) A_i


def test_grao_gradient_signs():
    beta, lam = 0.5, 0.6
    l, l_y = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True), torch.tensor(-1.5, requires_grad=True)
    A, A_y = torch.tensor([1.2, -0.4, -0.8]), torch.tensor(0.9)
    (-grao_loss(l, l_y, A, A_y, beta, lam)).backward()               # dJ
    assert l.grad.tolist() == pytest.approx(((1 + lam) * A / 3).tolist())
    assert torch.equal(torch.sign(l.grad), torch.sign(A))
    assert l_y.grad.item() == pytest.approx(beta * 0.9 - lam * A.mean().item())


# -- inference-time objectives (§5) -----------------------------------------------------------------------------

OUTCOME_REWARD = {"pass": [1.0, 0.0, 0.0], "max": [0.2, 1.0, 0.6], "mean": [0.2, 1.0, 0.6], "maj": [1.0, 0.0, 0.0]}
OUTCOME_ANSWER = ["4", "5", None]   # a 3-outcome policy: right answer, wrong answer, no answer (votes for nothing)


def exact_gradients(objective: str, k: int, centred: bool = False):
    """(grad of J_k, grad of J_{k-1}, expected estimator) for a softmax policy over 3 outcomes, by enumerating all
    3^k sample tuples: no sampling noise, so they must agree to rounding."""
    theta = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
    logp = torch.log_softmax(theta, -1)
    rewards, answers = OUTCOME_REWARD[objective], OUTCOME_ANSWER

    def objective_value(n):
        return sum(torch.exp(sum(logp[y] for y in ys)) * aggregate(objective, [rewards[y] for y in ys],
                                                                   [answers[y] for y in ys])
                   for ys in product(range(3), repeat=n))
    estimator = 0
    for ys in product(range(3), repeat=k):
        probability = torch.exp(sum(logp[y] for y in ys)).detach()
        advantages = loo_advantages(objective, [rewards[y] for y in ys], [answers[y] for y in ys], centred)
        estimator = estimator + probability * sum(a * logp[y] for a, y in zip(advantages, ys))
    grads = [torch.autograd.grad(value, theta, retain_graph=True)[0]
             for value in (objective_value(k), objective_value(k - 1), estimator)]
    return grads


@pytest.mark.parametrize("objective", ["pass", "max", "maj", "mean"])
def test_leave_one_out_is_exactly_unbiased(objective):
    grad_k, _, expected = exact_gradients(objective, k=3)
    assert torch.allclose(expected, grad_k, atol=1e-6), (expected, grad_k)
    assert grad_k.abs().max() > 1e-3                                    # not trivially zero


@pytest.mark.parametrize("objective", ["pass", "max", "maj"])
def test_centred_leave_one_out_is_the_gradient_of_k_minus_one_samples(objective):
    grad_k, grad_k_minus_1, expected = exact_gradients(objective, k=3, centred=True)
    assert torch.allclose(expected, grad_k_minus_1, atol=1e-6)
    assert not torch.allclose(expected, grad_k, atol=1e-3)              # biased for the k-sample objective


def test_bernoulli_pass_at_k_derivative_by_monte_carlo():
    p, k, draws = 0.3, 4, 200_000
    generator = torch.Generator().manual_seed(0)
    y = (torch.rand(draws, k, generator=generator) < p).double()
    correct = y.sum(1, keepdim=True)
    advantages = y * (correct == 1)                                     # pass@k LOO: 1 for a lone correct sample
    score = y / p - (1 - y) / (1 - p)                                   # d/dp log pi(y)
    estimates = (advantages * score).sum(1)
    truth = k * (1 - p) ** (k - 1)
    assert abs(estimates.mean().item() - truth) < 4 * estimates.std().item() / math.sqrt(draws)
    assert [loo_advantages("pass", row) for row in ([1, 0, 0, 0], [0, 1, 1, 0])] == [[1, 0, 0, 0], [0, 0, 0, 0]]


def test_mean_objective_advantage_is_rloo_over_k():
    rewards = [0.2, 1.0, 0.6, 0.0]
    rloo = [r - (sum(rewards) - r) / 3 for r in rewards]      # r_i - mean_{j != i} r_j (RLOO, Ahmadian et al. 2024)
    assert rloo[1] == pytest.approx(1.0 - 0.8 / 3)
    assert loo_advantages("mean", rewards) == pytest.approx([r / 4 for r in rloo])


@pytest.mark.parametrize("rewards", [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1, 1]])
def test_pass_at_k_is_sparse_unless_exactly_one_sample_is_right(rewards):
    assert loo_advantages("pass", rewards) == [0.0] * len(rewards)
    assert loo_advantages("pass", [0, 0, 1, 0]) == [0, 0, 1, 0]
    assert loo_advantages("max", [0.2, 0.9, 0.5]) == pytest.approx([0, 0.4, 0])   # best minus second best


def test_centred_advantages_sum_to_zero():
    for objective, rewards, answers in [("pass", [0, 1, 0, 0], None), ("maj", [1, 1, 0, 0], ["4", "4", "5", None]),
                                        ("max", [0.1, 0.7, 0.3], None)]:
        assert sum(loo_advantages(objective, rewards, answers, centred=True)) == pytest.approx(0, abs=1e-12)


def test_majority_vote_advantages_by_hand_bounded_and_equivariant():
    assert loo_advantages("maj", [1, 1, 0], ["4", "4", "5"]) == pytest.approx([0.5, 0.5, 0])  # removing a 4 ties
    assert loo_advantages("maj", [1, 0, 0], ["4", None, None]) == [1, 0, 0]      # the only valid vote
    assert loo_advantages("maj", [0, 0, 1, 1, 1], ["5", "5", "4", "4", "4"]) == pytest.approx([0, 0, .5, .5, .5])
    generator = torch.Generator().manual_seed(1)
    for _ in range(200):
        picks = torch.randint(0, 4, (5,), generator=generator).tolist()
        answers = [["4", "5", "6", None][i] for i in picks]
        rewards = [1.0 if a == "4" else 0.0 for a in answers]
        advantages = loo_advantages("maj", rewards, answers)
        assert all(abs(a) <= 1 for a in advantages)
        order = torch.randperm(5, generator=generator).tolist()
        permuted = loo_advantages("maj", [rewards[i] for i in order], [answers[i] for i in order])
        assert permuted == pytest.approx([advantages[i] for i in order])


def test_aggregate_of_no_samples_is_zero_so_one_sample_is_reinforce():
    assert aggregate("pass", []) == 0 and loo_advantages("pass", [1.0]) == [1.0]
    with pytest.raises(ValueError, match="objective"):
        aggregate("best", [1.0])


def test_policy_gradient_loss_gradient_is_the_estimator():
    logps = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    policy_gradient_loss(logps, torch.tensor([[1.0, 0.0, -0.5]])).backward()
    assert logps.grad.tolist() == [[-1.0, 0.0, 0.5]]


def test_pass_at_k_estimator_edges():
    assert pass_at_k(10, 0, 4) == 0.0
    assert pass_at_k(10, 7, 4) == 1.0 and pass_at_k(10, 10, 1) == 1.0           # c >= n - k + 1
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
