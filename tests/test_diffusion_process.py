"""The diffusion process: schedule marginals, exact target conversions, weightings, and the
samplers."""

import math

import pytest
import torch

from elt.diffusion.process import DiffusionProcess
from elt.diffusion.sampler import DDIMSampler, DDPMSampler, build_sampler, posterior, sample

PATHS = [("vp", "cosine"), ("linear", "linear")]


def make(interpolant="vp", schedule="cosine", **kw):
    return DiffusionProcess(interpolant=interpolant, schedule=schedule, **kw)


def test_schedule_coefficients_match_their_closed_forms():
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    alpha, sigma = make("vp", "cosine").alpha_sigma(t)
    torch.testing.assert_close(alpha, torch.cos(0.5 * math.pi * t))
    torch.testing.assert_close(sigma, torch.sin(0.5 * math.pi * t))
    alpha, sigma = make("linear", "linear").alpha_sigma(t)
    torch.testing.assert_close(alpha, 1 - t)
    torch.testing.assert_close(sigma, t)
    # the shift moves logSNR by exactly its value, and the interpolant identity still holds
    shifted = make("vp", "cosine", logsnr_shift=-1.5)
    torch.testing.assert_close(shifted.logsnr(t), make().logsnr(t) - 1.5)
    a, s = shifted.alpha_sigma(t)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(t))
    torch.testing.assert_close(torch.log(a**2 / s**2), shifted.logsnr(t))
    # ends are finite (clipped) and monotone: t=0 is (nearly) clean, t=1 (nearly) pure noise
    ends = make().logsnr(torch.tensor([0.0, 1.0]))
    assert ends.tolist() == [15.0, -15.0]
    assert torch.all(make().logsnr(torch.linspace(0, 1, 101)).diff() <= 0)


@pytest.mark.parametrize("interpolant,schedule", PATHS)
def test_forward_marginals_match_the_schedule(interpolant, schedule):
    process = make(interpolant, schedule)
    torch.manual_seed(0)
    x0 = torch.tensor([0.7, -0.3])
    for t_value in (0.1, 0.5, 0.9):
        t = torch.full((200_000,), t_value)
        z = process.add_noise(x0.expand(len(t), 2), torch.randn(len(t), 2), t)
        alpha, sigma = (float(c) for c in process.alpha_sigma(torch.tensor([t_value])))
        torch.testing.assert_close(z.mean(0), alpha * x0, atol=0.01, rtol=0)
        torch.testing.assert_close(z.std(0), torch.full((2,), sigma), atol=0.01, rtol=0.01)


@pytest.mark.parametrize("interpolant,schedule", PATHS)
@pytest.mark.parametrize("prediction", ["x0", "eps", "v"])
def test_target_conversions_are_exact_inverses(interpolant, schedule, prediction):
    process = make(interpolant, schedule, prediction=prediction)
    torch.manual_seed(0)
    x0, eps = (
        torch.randn(16, 3, 4, 4, dtype=torch.float64),
        torch.randn(16, 3, 4, 4, dtype=torch.float64),
    )
    t = torch.rand(16, dtype=torch.float64) * 0.98 + 0.01
    z = process.add_noise(x0, eps, t)
    x0_back, eps_back = process.to_x0_eps(process.target(x0, eps, t), z, t)
    torch.testing.assert_close(x0_back, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_back, eps, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(process.eps_from_x0(x0, z, t), eps, rtol=1e-9, atol=1e-9)


def test_velocity_targets_are_the_path_derivatives():
    x0, eps = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    flow = make("linear", "linear", prediction="v")
    torch.testing.assert_close(flow.target(x0, eps, t), eps - x0)  # dz/dt of (1−t)·x0 + t·ε
    vp = make("vp", "cosine", prediction="v")
    alpha, sigma = vp.alpha_sigma(t[:1])
    torch.testing.assert_close(vp.target(x0, eps, t), alpha * eps - sigma * x0)


@pytest.mark.parametrize("interpolant,schedule", PATHS)
@pytest.mark.parametrize("prediction", ["x0", "eps", "v"])
def test_weightings_equal_the_plain_mse_they_name(interpolant, schedule, prediction):
    """w(t)·‖x̂0 − x0‖² with weighting=P equals the unweighted MSE on target P, whatever the network
    outputs."""
    torch.manual_seed(1)
    x0, eps = (
        torch.randn(8, 2, 4, 4, dtype=torch.float64),
        torch.randn(8, 2, 4, 4, dtype=torch.float64),
    )
    t = torch.rand(8, dtype=torch.float64) * 0.9 + 0.05
    base = make(interpolant, schedule, prediction=prediction)
    z = base.add_noise(x0, eps, t)
    output = base.target(x0, eps, t) + 0.1 * torch.randn_like(x0)  # an imperfect network output
    x0_hat, eps_hat = base.to_x0_eps(output, z, t)
    for weighting in ("x0", "eps", "v"):
        process = make(interpolant, schedule, prediction=weighting, weighting=weighting)
        got = process.weighted_error(x0_hat, x0, t)
        prediction_hat = process.target(
            x0_hat, eps_hat, t
        )  # the same estimate, expressed as target P
        want = (prediction_hat - process.target(x0, eps, t)).pow(2).flatten(1).mean(1).mean()
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-9)
    # sigmoid weighting in x0 space is Kingma & Gao's sigmoid(b − λ)-weighted eps-MSE, up to the
    # constant e^b
    sig = make(interpolant, schedule, weighting="sigmoid", sigmoid_bias=-2.0)
    lam = sig.logsnr(t)
    eps_mse = (eps_hat - eps).pow(2).flatten(1).mean(1)
    want = (torch.exp(torch.tensor(2.0)) * torch.sigmoid(-2.0 - lam) * eps_mse).mean()
    torch.testing.assert_close(
        sig.weighted_error(x0_hat, x0, t).double(), want, rtol=1e-5, atol=1e-9
    )


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="prediction"):
        make(prediction="score")
    with pytest.raises(ValueError, match="sampler"):
        build_sampler("heun")


# -- samplers --------------------------------------------------------------------------------------
def oracle_for_point(process, target_x0):
    """A perfect network for data that is always ``target_x0``: outputs the true target at (z,
    t)."""

    def denoise(z, t, loops):
        x0 = target_x0.expand_as(z)
        return process.target(x0, process.eps_from_x0(x0, z, t), t)

    return denoise


@pytest.mark.parametrize("interpolant,schedule", PATHS)
@pytest.mark.parametrize("prediction", ["x0", "eps", "v"])
@pytest.mark.parametrize("sampler", [DDIMSampler(), DDPMSampler(), DDIMSampler(eta=0.5)])
def test_sampler_recovers_the_data_with_the_true_x0(interpolant, schedule, prediction, sampler):
    process = make(interpolant, schedule, prediction=prediction)
    data = torch.randn(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    out = sample(oracle_for_point(process, data), noise, process, sampler, [2] * 10, generator=g)
    torch.testing.assert_close(out, data.expand_as(out), rtol=0, atol=1e-6)


def gaussian_oracle(process, mean, std):
    """Posterior-mean denoiser E[x0 | z_t] for 1-D data x0 ~ N(mean, std²): the optimal
    x0-predictor."""

    def denoise(z, t, loops):
        alpha, sigma = (c.to(z.dtype).view(-1, 1) for c in process.alpha_sigma(t))
        gain = alpha * std**2 / (alpha**2 * std**2 + sigma**2)
        return mean + gain * (z - alpha * mean)

    return denoise


@pytest.mark.parametrize("interpolant,schedule", PATHS)
@pytest.mark.parametrize("name,steps", [("ddim", 50), ("ddpm", 100)])
def test_samplers_reproduce_a_gaussian_data_distribution(interpolant, schedule, name, steps):
    process = make(interpolant, schedule, prediction="x0")
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(40_000, 1, generator=g, dtype=torch.float64)
    out = sample(
        gaussian_oracle(process, 0.5, 0.3),
        noise,
        process,
        build_sampler(name),
        [1] * steps,
        generator=g,
    )
    assert abs(out.mean().item() - 0.5) < 0.01
    assert abs(out.std().item() - 0.3) < 0.015


def test_ddpm_step_draws_from_the_forward_marginal():
    """z_t ~ q(z_t|x0), then one ancestral step with the true x0 gives z_s ~ q(z_s|x0)."""
    process = make()
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((100_000, 1), 0.4, dtype=torch.float64)
    t, s = 0.7, 0.4
    z_t = process.add_noise(
        x0, torch.randn(x0.shape, generator=g, dtype=torch.float64), torch.full((len(x0),), t)
    )
    z_s = DDPMSampler().step(process, z_t, t, s, x0, None, g)
    alpha_s, sigma_s = (float(c) for c in process.alpha_sigma(torch.tensor([s])))
    assert abs(z_s.mean().item() - alpha_s * 0.4) < 0.01
    assert abs(z_s.std().item() - sigma_s) < 0.01
    c_z, c_x, var = posterior(process, t, s)
    assert var > 0 and c_z > 0 and c_x > 0


def test_ddim_with_eta_one_is_ancestral_sampling():
    process = make(prediction="x0")
    noise = torch.randn(64, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    denoise = gaussian_oracle(process, -0.2, 0.5)
    a = sample(
        denoise, noise, process, DDPMSampler(), [1] * 20, generator=torch.Generator().manual_seed(1)
    )
    b = sample(
        denoise,
        noise,
        process,
        DDIMSampler(eta=1.0),
        [1] * 20,
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(a, b)


def test_sampler_passes_each_steps_loop_count():
    process = make()
    seen = []

    def denoise(z, t, loops):
        seen.append((round(float(t[0]), 4), loops))
        return torch.zeros_like(z)

    sample(denoise, torch.zeros(2, 1), process, DDIMSampler(), [4, 3, 2, 1])
    assert seen == [(1.0, 4), (0.75, 3), (0.5, 2), (0.25, 1)]
