"""The ILSD objective: formulas, gradient routing, λ schedule and the L_int draw."""

import collections

import pytest
import torch

from elt.core.ilsd import StudentLoopDraw, ilsd_lambda, ilsd_loss
from elt.core.looped import LoopedTransformer


def mse_to(target):
    return lambda pred: (pred - target).pow(2).mean()


def dist(student, teacher):
    return (student - teacher).pow(2).mean()


def test_lambda_one_and_zero_match_hand_computation():
    teacher = torch.tensor([1.0, 2.0])
    student = torch.tensor([0.0, 4.0])
    target = torch.tensor([1.0, 1.0])
    # hand: GT(teacher) = (0 + 1)/2 = 0.5; GT(student) = (1 + 9)/2 = 5; DIST = (1 + 4)/2 = 2.5
    one = ilsd_loss(teacher, student, mse_to(target), dist, lam=1.0)
    zero = ilsd_loss(teacher, student, mse_to(target), dist, lam=0.0)
    half = ilsd_loss(teacher, student, mse_to(target), dist, lam=0.5)
    assert one.total.item() == pytest.approx(0.5 + 5.0)
    assert zero.total.item() == pytest.approx(0.5 + 2.5)
    assert half.total.item() == pytest.approx(0.5 + 0.5 * 5.0 + 0.5 * 2.5)
    assert (one.teacher_gt.item(), one.student_gt.item(), one.distill.item()) == pytest.approx(
        (0.5, 5.0, 2.5)
    )
    vanilla = ilsd_loss(teacher, None, mse_to(target), dist, lam=0.3)
    assert vanilla.total.item() == pytest.approx(0.5) and vanilla.student_gt is None


def test_teacher_gets_no_gradient_through_distillation():
    teacher = torch.tensor([1.0, 2.0], requires_grad=True)
    student = torch.tensor([0.0, 4.0], requires_grad=True)
    target = torch.zeros(2)
    ilsd_loss(teacher, student, mse_to(target), dist, lam=0.0).total.backward()
    # teacher gradient is exactly that of its own GT loss: d/dt mean(t²) = t
    torch.testing.assert_close(teacher.grad, teacher.detach())
    # student gradient is that of the distillation term only (λ = 0): (s − t)
    torch.testing.assert_close(student.grad, (student - teacher).detach())


def test_both_ground_truth_terms_reach_the_shared_weights():
    torch.manual_seed(0)
    model = LoopedTransformer(16, 2, 3, 2).double()
    x = torch.randn(2, 4, 16, dtype=torch.float64)
    target = torch.randn(2, 4, 16, dtype=torch.float64)
    out = model(x, exit_loops=(1,))

    def grad_of(loss):
        model.zero_grad()
        loss.backward(retain_graph=True)
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    g_teacher = grad_of(mse_to(target)(out.final))
    g_student = grad_of(mse_to(target)(out.exits[1]))
    assert g_teacher.abs().sum() > 0 and g_student.abs().sum() > 0
    assert not torch.allclose(g_teacher, g_student)
    # the full objective's gradient is the weighted sum of the parts (teacher detached in DIST)
    terms = ilsd_loss(out.final, out.exits[1], mse_to(target), dist, lam=0.25)
    g_dist = grad_of(dist(out.exits[1], out.final.detach()))
    torch.testing.assert_close(grad_of(terms.total), g_teacher + 0.25 * g_student + 0.75 * g_dist)


def test_lambda_schedules():
    assert ilsd_lambda(0, 101) == 1.0 and ilsd_lambda(100, 101) == 0.0
    assert ilsd_lambda(50, 101) == pytest.approx(0.5)
    values = [ilsd_lambda(s, 50, "linear") for s in range(50)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert ilsd_lambda(25, 51, "cosine") == pytest.approx(0.5)
    assert ilsd_lambda(7, 100, "constant", start=0.3) == 0.3
    with pytest.raises(ValueError, match="unknown lambda schedule"):
        ilsd_lambda(0, 10, "exp")
    with pytest.raises(ValueError, match="lambda must lie"):
        ilsd_loss(torch.zeros(1), torch.zeros(1), mse_to(torch.zeros(1)), dist, lam=1.5)


@pytest.mark.parametrize("min_loops,max_loops", [(1, 4), (2, 6), (1, 2)])
def test_student_loops_cover_exactly_the_range(min_loops, max_loops):
    draws = StudentLoopDraw(max_loops, min_loops, seed=3)
    counts = collections.Counter(draws.draw() for _ in range(4000))
    assert set(counts) == set(range(min_loops, max_loops))
    expected = 4000 / (max_loops - min_loops)
    assert all(abs(c - expected) < 0.15 * expected for c in counts.values())  # roughly uniform


def test_student_loop_draws_are_seeded_and_resumable():
    a = StudentLoopDraw(6, seed=11)
    first = [a.draw() for _ in range(5)]
    state = a.state_dict()
    rest = [a.draw() for _ in range(5)]
    b = StudentLoopDraw(6, seed=11)
    assert [b.draw() for _ in range(5)] == first
    c = StudentLoopDraw(6, seed=0)
    c.load_state_dict(state)
    assert [c.draw() for _ in range(5)] == rest
    with pytest.raises(ValueError, match="loops >= 2"):
        StudentLoopDraw(1)
    with pytest.raises(ValueError, match="min_student_loops"):
        StudentLoopDraw(4, min_loops=4)
