"""perf.compile: compiled and eager updates agree, a seed fixes the compiled numbers, checkpoints
cross between the two, the eager path keeps the random stream it always had, and bad settings or
a failing compiler are handled as documented."""

import copy

import numpy as np
import pytest
import torch

from redraw import perf
from redraw.agent.actor_critic import ActorCriticConfig, ImaginationPolicy
from redraw.agent.agent import Agent, AgentConfig
from redraw.config import ConfigError
from test_models import SPEC, batch_for, tiny


def agent(compile=False, **kw):
    torch.manual_seed(0)
    a = Agent(SPEC, 1, AgentConfig(wm=tiny(), ac=ActorCriticConfig(units=16, horizon=4), bf16=False,
                                   compile=compile, **kw))
    a.seed(0)
    return a


def run(a, n=2):
    batch = batch_for(SPEC, B=2, T=6)
    out = [a.train_step(batch) for _ in range(n)]
    out.append(a.policy_step(batch))
    return out


def no_fallback(a):
    """Every compiled region compiled as one graph (fullgraph: a graph break is a failure)."""
    parts = [a.wm, a.ac] + ([a.explorer, a.disagreement] if a.explorer is not None else [])
    regions = [fn for p in parts for fn in p._compiled.values()]
    assert regions and all(isinstance(fn, perf.Compiled) for fn in regions)
    assert not [fn.name for fn in regions if fn.failed]
    assert all(fn.calls for fn in regions)


@pytest.mark.slow
@pytest.mark.parametrize("world_model,exploration", [("draw", "task"), ("rssm", "task"), ("draw", "plan2explore")])
def test_compiled_and_eager_updates_agree_and_a_seed_fixes_the_compiled_numbers(world_model, exploration, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    kw = {"world_model": world_model, "exploration": exploration, "disagreement_heads": 3}
    eager = run(agent(**kw))
    compiled_agent = agent(compile=True, **kw)
    compiled = run(compiled_agent)
    no_fallback(compiled_agent)
    for e, c in zip(eager, compiled):
        assert e.keys() == c.keys()
        for k in e:
            if k.startswith("loss/"):
                assert c[k] == pytest.approx(e[k], rel=1e-3, abs=1e-4), k
    assert run(agent(compile=True, **kw)) == compiled  # same seed, same numbers
    # a compiled agent's checkpoint is an eager agent's, and back
    eager_agent = agent(**kw)
    eager_agent.load_checkpoint_state(copy.deepcopy(compiled_agent.checkpoint_state()))
    for k, v in compiled_agent.state_dict().items():
        assert torch.equal(v, eager_agent.state_dict()[k]), k
    back = agent(compile=True, **kw)
    back.load_checkpoint_state(eager_agent.checkpoint_state())
    assert run(back, 1)[0]["loss/wm"] == pytest.approx(run(eager_agent, 1)[0]["loss/wm"], rel=1e-3)


@pytest.mark.parametrize("clip,chunk", [(False, 8), (True, 8), (False, 4), (False, 1)])
def test_imagination_from_pre_drawn_noise_is_the_actors_own_sampling(clip, chunk, monkeypatch):
    """The fused (compilable) imagination path draws the same random numbers in the same order as
    the actor and the dynamics draw them themselves, however many steps a chunk holds (6 steps:
    one chunk, chunks of 4 and 2, six of 1): the eager numbers are unchanged."""
    a = agent()
    monkeypatch.setattr(a.wm, "IMAGINE_CHUNK", chunk)
    start = type(a.wm.initial((5,)))(*(x.detach() for x in a.wm.initial((5,))))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    own = a.wm.imagine(lambda f: a.ac.actor.act(f, generator=g1, clip=clip), start, 6, generator=g1)
    fused = a.wm.imagine(ImaginationPolicy(a.ac.actor, 1, clip=clip), start, 6, generator=g2)
    for k in own:
        assert torch.equal(own[k], fused[k]), k


def test_perf_settings_are_checked_naming_the_file_and_key():
    assert perf.perf_config({}) == perf.PerfConfig()
    assert perf.perf_config({"perf": {"compile": False, "threads": 1}}).threads == 1
    with pytest.raises(ConfigError, match=r"params.yaml: unknown key 'perf.jit'"):
        perf.perf_config({"perf": {"jit": True}})
    with pytest.raises(ConfigError, match=r"params.yaml: perf.compile must be true or false, got 'yes'"):
        perf.perf_config({"perf": {"compile": "yes"}})
    with pytest.raises(ConfigError, match=r"p.yaml: perf.threads must be a whole number"):
        perf.perf_config({"perf": {"threads": -1}}, "p.yaml")
    with pytest.raises(ConfigError, match=r"params.yaml: perf.fused_chain must be true or false, got 1"):
        perf.perf_config({"perf": {"fused_chain": 1}})


def test_a_region_that_does_not_compile_runs_eagerly_and_says_so_once(capsys):
    def branchy(x):  # data-dependent Python control flow: no single graph
        return x + 1 if float(x.sum()) > 0 else x - 1

    fn = perf.Compiled(branchy, "branchy")
    x = torch.ones(3)
    assert torch.equal(fn(x), branchy(x)) and torch.equal(fn(-x), branchy(-x))
    err = capsys.readouterr().err
    assert fn.failed and err.count("perf: compiling branchy failed") == 1 and "running it eagerly" in err


def test_perf_off_compiles_nothing():
    a = agent(compile=False)
    assert not a.wm._compiled and not a.ac._compiled
    run(a, 1)
    assert np.isfinite(a.train_step(batch_for(SPEC, B=2, T=6))["loss/wm"])


def test_plan2explore_reward_in_row_chunks_is_the_whole_batchs():
    """Without a graph, large batches are scored in chunks (memory); the reward is the same."""
    from redraw.agent.plan2explore import Disagreement

    d = Disagreement(16, 2, 32, heads=4, units=32, layers=1)
    feat, action = torch.randn(5, 30, 16), torch.randn(5, 30, 2)
    with torch.no_grad():
        whole = d.reward(feat, action)
        d.REWARD_ROWS = 7  # 150 rows: 22 chunks, the last one short
        chunked = d.reward(feat, action)
    assert chunked.shape == (5, 30)
    torch.testing.assert_close(chunked, whole)


def test_plan2explore_compiled_reward_and_loss_are_the_eager_ones():
    """Compiled, the reward and the ensemble's loss sum the heads one by one instead of stacking
    them: the same unbiased variance and mean squared error, and the same gradients."""
    from redraw.agent.plan2explore import Disagreement

    torch.manual_seed(0)
    d = Disagreement(16, 2, 24, heads=4, units=32, layers=1)
    d.use_compile(True)
    feat, action, target = torch.randn(3, 10, 16), torch.randn(3, 10, 2), torch.randn(3, 10, 24)
    with torch.no_grad():
        eager = d.spread(feat, action)
        compiled = d._compiled["spread"](feat, action)
        stacked = d.predict(feat, action)  # the definition: unbiased variance over the heads
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(compiled, stacked.var(0).mean(-1), rtol=1e-5, atol=1e-7)
    grads = []
    for fn in (d.loss, d._compiled["loss"]):
        d.zero_grad()
        loss = fn(feat, action, target)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in d.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-7)
    for compiled_grad, eager_grad in zip(grads[1][1], grads[0][1]):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-4, atol=1e-7)
    assert all(fn.calls and not fn.failed for fn in d._compiled.values())  # compiled, not the eager fallback


@pytest.mark.parametrize("world_model", ["draw", "rssm"])
def test_the_observe_chain_runs_in_fp32_under_bf16_autocast_on_a_cpu(world_model):
    """observe's sequential chain (batch-row products, where this CPU's fp32 beats bf16) keeps
    fp32 under the agent's bf16 autocast; the batch-wide products around it stay bf16. (DRAW's
    step-by-step chain here; its fused chain is checked against this one below.)"""
    a = agent(world_model=world_model)
    wm = a.wm
    wm.fused_chain = False
    chain = [wm.prior] if world_model == "draw" else [wm.img_in, wm.gru, wm.posterior]
    dtypes: dict[str, set] = {"chain": set(), "encoder": set()}

    def record(kind):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            dtypes[kind].add(out.dtype)
        return hook

    hooks = [m.register_forward_hook(record("chain")) for m in chain]
    hooks.append(wm.vec_encoder.register_forward_hook(record("encoder")))
    batch = batch_for(SPEC, B=2, T=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = wm.observe({k: batch[k] for k in wm.obs_spec}, batch["action"], batch["is_first"], generator=a.generator)
    for h in hooks:
        h.remove()
    assert dtypes["chain"] == {torch.float32}
    assert dtypes["encoder"] == {torch.bfloat16}
    assert out["prior_logp"].dtype == torch.float32 and torch.isfinite(out["prior_logp"]).all()


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
def test_the_fused_prior_chain_computes_what_the_step_by_step_chain_does(residual, bf16):
    """perf.fused_chain: DRAW's prior chain as one autograd node gives the same prior, beliefs
    and gradients (to float rounding) as the chain step by step through autograd, with and
    without a latent residual (then only the residual learns) and under bf16 autocast."""
    from redraw.models.dists import categorical_kl
    from redraw.models.residual import ResidualConfig

    a = agent()
    with torch.no_grad():
        a.wm.init_logits.normal_()  # resets use the initial belief: make it not uniform
    if residual:
        a.attach_residual(ResidualConfig())
        a.wm.requires_grad_(False)
        a.wm.residual.requires_grad_(True)
    batch = batch_for(SPEC, B=3, T=9)
    batch["is_first"][1, 4] = 1.0  # a reset inside the chain

    def run(fused):
        a.wm.fused_chain = fused
        a.wm.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = a.wm.observe({k: batch[k] for k in a.wm.obs_spec}, batch["action"], batch["is_first"],
                               generator=torch.Generator().manual_seed(0))
            post = out["post_logp"]
            loss = (categorical_kl(post.detach(), out["prior_logp"]) + categorical_kl(post, out["prior_logp"].detach())).sum()
        loss.backward()
        return out, {n: p.grad.clone() for n, p in a.wm.named_parameters() if p.grad is not None}

    (loop, g_loop), (fused, g_fused) = run(False), run(True)
    assert g_loop.keys() == g_fused.keys() and g_loop
    assert ("residual.nets.0.0.weight" in g_loop) == residual and ("prior.0.weight" in g_loop) != residual
    for k in ("prior_logp", "post_logp"):
        torch.testing.assert_close(fused[k], loop[k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fused["states"].belief, loop["states"].belief, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fused["state"].belief, loop["state"].belief, rtol=1e-4, atol=1e-6)
    # bf16 carries 8 bits of mantissa (a relative step of 2^-8): where the CPU has no native bf16
    # products its emulated kernels round the two chains' sums differently at that level
    rtol = 1e-2 if bf16 else 1e-3
    for n in g_loop:
        torch.testing.assert_close(g_fused[n], g_loop[n], rtol=rtol, atol=1e-5 * g_loop[n].abs().max().item(), msg=n)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_auto_follows_the_machine_and_a_bad_value_is_refused(native, monkeypatch):
    """``pretrain.bf16: auto`` (the default) and an agent without a stated precision use bf16
    autocast only where the device multiplies bf16 natively: on an AVX2-only CPU, where PyTorch
    emulates bf16 products ~50x slower than fp32, they train in fp32. true / false are kept."""
    from redraw.agent.configs import configs_from_params
    from redraw.config import load_params
    from test_pretrain import ROOT

    monkeypatch.setattr(perf, "native_bf16", lambda device="cpu": native)
    params = load_params(ROOT / "params.yaml")
    assert params["pretrain"]["bf16"] == "auto"
    agent_cfg, pre = configs_from_params(params)
    assert agent_cfg.bf16 is native and pre.bf16 is native  # resolved: a run's identity names the precision
    for value in (True, False):
        params["pretrain"]["bf16"] = value
        assert configs_from_params(params)[0].bf16 is value
    assert Agent(SPEC, 1, AgentConfig(wm=tiny())).bf16 is native  # e.g. load_agent's: no precision stated
    assert Agent(SPEC, 1, AgentConfig(wm=tiny(), bf16=not native)).bf16 is (not native)
    params["pretrain"]["bf16"] = "yes"
    with pytest.raises(ConfigError, match=r"p.yaml: pretrain.bf16 must be true, false or auto, got 'yes'"):
        configs_from_params(params, "p.yaml")


def test_native_bf16_reads_the_cpus_features(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not perf.native_bf16("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert perf.native_bf16("cpu")


def test_the_fused_rssm_chain_computes_what_the_step_by_step_chain_does():
    """perf.fused_chain: the RSSM's observe chain as one autograd node draws the same samples and
    gives the same deters, posteriors, world-model loss and gradients (to float rounding) as the
    chain step by step through autograd, with resets inside the chain and at its start; without
    a graph it runs forward only, from a given state too."""
    a = agent(world_model="rssm")
    wm = a.wm
    with torch.no_grad():
        wm.init_deter.normal_()  # resets use the initial state: make it not zero
    batch = batch_for(SPEC, B=3, T=9)
    batch["is_first"][1, 4] = 1.0
    batch["is_first"][2, 0] = 1.0

    def run(fused):
        wm.fused_chain = fused
        wm.zero_grad(set_to_none=True)
        loss, _, out = wm.loss(batch, generator=torch.Generator().manual_seed(0))
        loss.backward()
        return loss.detach(), out, {n: p.grad.clone() for n, p in wm.named_parameters() if p.grad is not None}

    (l_loop, loop, g_loop), (l_fused, fused, g_fused) = run(False), run(True)
    tol = dict(rtol=1e-4, atol=1e-5)
    # the same samples: the same classes drawn (the straight-through one-hot's values differ by rounding)
    assert torch.equal(fused["states"].z.argmax(-1), loop["states"].z.argmax(-1))
    torch.testing.assert_close(fused["states"].z, loop["states"].z, **tol)
    for x, y in ((fused["states"].deter, loop["states"].deter), (fused["post_logp"], loop["post_logp"]),
                 (fused["state"].deter, loop["state"].deter), (l_fused, l_loop)):
        torch.testing.assert_close(x, y, **tol)
    assert g_loop.keys() == g_fused.keys() and {"init_deter", "gru.linear.weight", "img_in.0.weight"} <= g_loop.keys()
    for n in g_loop:
        scale = g_loop[n].abs().max().item()
        torch.testing.assert_close(g_fused[n], g_loop[n], rtol=1e-3, atol=1e-5 * scale, msg=n)
    with torch.no_grad():
        obs = {k: batch[k] for k in wm.obs_spec}
        outs = []
        for fused in (False, True):
            wm.fused_chain = fused
            outs.append(wm.observe(obs, batch["action"], batch["is_first"], state=loop["state"],
                                   generator=torch.Generator().manual_seed(1)))
    assert torch.equal(outs[0]["states"].z.argmax(-1), outs[1]["states"].z.argmax(-1))
    torch.testing.assert_close(outs[1]["states"].deter, outs[0]["states"].deter, **tol)


def test_an_agent_that_only_acts_makes_no_optimizer_and_keeps_the_loaded_states(tmp_path):
    """Loading a policy to act (an evaluation, a deployed policy on a robot) builds no optimizer,
    so it never imports torch._dynamo (~1.7 s); its checkpoint still carries the optimizer states
    it loaded, and an agent that goes on training from it steps as one that loaded them at once."""
    import subprocess
    import sys

    from redraw.agent.agent import load_agent
    from redraw.checkpoint import save_checkpoint

    trained = agent(exploration="plan2explore")  # load_agent builds the default 8 heads
    run(trained, 2)
    path = tmp_path / "agent.pt"
    save_checkpoint(path, {"agent": trained.checkpoint_state()}, {
        "world_model": "draw", "exploration": "plan2explore", "model": vars(trained.cfg.wm),
        "actor_critic": vars(trained.cfg.ac), "obs_spec": {k: list(v[0]) for k, v in SPEC.items()}, "action_size": 1})
    code = (f"import sys, numpy as np; from redraw.agent.agent import load_agent; a = load_agent({str(path)!r}); "
            "a.act({k: np.zeros(v[0], np.float32) for k, v in a.obs_spec.items()}); "
            "print('torch._dynamo' in sys.modules, any(x.made for x in a._adams().values()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"], "acting built an optimizer or imported torch._dynamo"

    acting = load_agent(path)
    assert not any(x.made for x in acting._adams().values())
    saved, again = trained.checkpoint_state(), acting.checkpoint_state()  # e.g. calibration's saved agent
    for key in ("wm_opt", "actor_opt", "critic_opt", "explorer_actor_opt", "disagreement_opt"):
        assert saved[key]["state"].keys() == again[key]["state"].keys() and saved[key]["state"], key
        for i, st in saved[key]["state"].items():
            assert all(torch.equal(v, again[key]["state"][i][k]) for k, v in st.items()), key
    resumed = load_agent(path, bf16=trained.bf16)  # by default the machine's precision (bf16 where AMX has it)
    assert run(resumed, 1) == run(trained, 1)  # the waiting states were applied when training began


@pytest.mark.parametrize("exploration", ["task", "plan2explore"])
def test_fused_adam_updates_as_torchs_default_and_off_is_torchs_default(exploration):
    """perf.fused_adam: every optimizer of the agent takes the fused kernel and updates the
    weights as torch's default Adam does to float rounding; off, the agent is bit-identical to
    one never given the setting; a checkpoint keeps this process's setting, not its saver's."""
    plain = agent(exploration=exploration)
    off, on = agent(exploration=exploration), agent(exploration=exploration)
    off.use_perf(perf.PerfConfig(compile=False, fused_adam=False))
    on.use_perf(perf.PerfConfig(compile=False))
    assert len(on.optimizers()) == (6 if exploration == "plan2explore" else 3)
    assert all(g["fused"] for opt in on.optimizers().values() for g in opt.param_groups)
    assert not any(g["fused"] for opt in off.optimizers().values() for g in opt.param_groups)
    ran = [run(a, 3) for a in (plain, off, on)]
    assert ran[1] == ran[0]
    for k, v in plain.state_dict().items():
        assert torch.equal(off.state_dict()[k], v), k
        torch.testing.assert_close(on.state_dict()[k], v, rtol=1e-3, atol=1e-5, msg=k)
    fresh = agent(exploration=exploration).state_dict()  # the weights moved: not a comparison of untouched ones
    moved = [k for k, v in on.state_dict().items() if v.is_floating_point() and not torch.equal(v, fresh[k])]
    assert any(k.startswith("wm.") for k in moved) and any(k.startswith("ac.actor.") for k in moved)
    # a fused agent's checkpoint into an agent with the setting off, and back
    loaded = agent(exploration=exploration)
    loaded.use_perf(perf.PerfConfig(compile=False, fused_adam=False))
    loaded.load_checkpoint_state(copy.deepcopy(on.checkpoint_state()))
    assert not any(g["fused"] for opt in loaded.optimizers().values() for g in opt.param_groups)
    back = agent(exploration=exploration)
    back.use_perf(perf.PerfConfig(compile=False))
    back.load_checkpoint_state(copy.deepcopy(off.checkpoint_state()))
    assert all(g["fused"] for opt in back.optimizers().values() for g in opt.param_groups)
    assert np.isfinite(back.train_step(batch_for(SPEC, B=2, T=6))["loss/wm"])
    back.reset_actor_critic()  # ReDRAW's fresh actor-critic keeps the process's setting
    assert all(g["fused"] for opt in back.optimizers().values() for g in opt.param_groups)
    with pytest.raises(ConfigError, match=r"params.yaml: perf.fused_adam must be true or false, got 'no'"):
        perf.perf_config({"perf": {"fused_adam": "no"}})


def test_the_optimizer_step_benchmark_times_every_optimizer_of_the_agent(capsys, monkeypatch):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the presets and envs.yaml are the project's
    monkeypatch.syspath_prepend(str(root / "benchmarks"))
    import optimizer_step

    assert optimizer_step.main(["--steps", "1", "--threads", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines[:3]] == ["world", "actor", "critic"]
    assert lines[-1].startswith("all optimizers: default ") and "speed-up" in lines[-1]
