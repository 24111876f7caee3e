"""The registry of adaptation methods (redraw.methods): dvc.yaml's foreach lists are its lists, every
place that dispatches on a method reads it, and a method registered once is picked up everywhere."""

from pathlib import Path

import pytest
import torch
import yaml

from redraw import methods
from redraw.methods import Method, Trainable, draw_finetune, register, unregister

REPO = Path(__file__).resolve().parents[1]

#: a toy method: it calibrates only DRAW's initial logits (with draw_finetune's loss) and keeps the
#: pretrained actor-critic; everything else about it comes from the defaults
TOY = Method("toy_init_logits", loss=draw_finetune.loss,
             trainable=lambda agent, cfg, residual, **_: Trainable([agent.wm.init_logits], 1e-3, 1e-8, 100.0))


@pytest.fixture
def toy():
    register(TOY, before="oracle")
    try:
        yield TOY.name
    finally:
        unregister(TOY.name)


def _dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_dvc_yamls_foreach_lists_are_the_registrys():
    """A method added to the registry needs its rows in dvc.yaml: calibrate@ and train_policy@ for
    a method that calibrates (from the pretraining of its world model), evaluate@ for every row
    (with the policy it runs); params.yaml's evaluate.methods lists every row too."""
    from redraw.methods.base import WORLD_MODELS

    stages = _dvc_stages()
    calibrate = stages["calibrate"]["foreach"]
    assert tuple(calibrate) == methods.calibrated()
    for name, item in calibrate.items():
        assert item == {"pretrained": f"models/{WORLD_MODELS[methods.REGISTRY[name].world_model]}"}, name
    assert tuple(stages["train_policy"]["foreach"]) == methods.calibrated()
    evaluate = stages["evaluate"]["foreach"]
    assert tuple(evaluate) == methods.evaluated()
    for name, item in evaluate.items():
        assert item == {"policy": str(Path(methods.REGISTRY[name].policy_path).parent)}, name
    for stage in ("calibrate", "train_policy", "evaluate"):  # the methods' code is a dependency of their stages
        assert "src/redraw/methods" in stages[stage]["do"]["deps"], stage
    assert "src/redraw/methods" in stages["results"]["deps"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert tuple(params["evaluate"]["methods"]) == methods.evaluated()


def test_the_lists_other_code_imports_are_the_registrys():
    from redraw import cli_stages
    from redraw import results_records as records
    from redraw.agent import adapt
    from redraw.stages import evaluate

    assert adapt.CALIBRATED == {"draw_finetune": "draw", "dreamer_finetune": "rssm", "redraw": "draw",
                                "redraw_pessimistic": "draw"}
    assert adapt.METHODS == ("no_adapt", "draw_finetune", "dreamer_finetune", "redraw", "redraw_pessimistic")
    assert adapt.REINIT_ACTOR_CRITIC == adapt.RESIDUAL_METHODS == {"redraw", "redraw_pessimistic"}
    assert cli_stages.CALIBRATED == records.POLICY_METHODS == methods.calibrated()
    assert cli_stages.EVALUATED == methods.evaluated() == ("source", *adapt.METHODS, "oracle")
    assert records.METHODS == (*adapt.METHODS, "oracle")
    assert records.STARTS_FROM == {"dreamer_finetune": "pretrain_rssm", "oracle": "oracle"}
    assert evaluate.REFERENCES == methods.references() == ("source", "oracle")
    assert dict(evaluate.POLICIES) == {
        "source": ("models/pretrain/agent.pt", "env.source"),
        "no_adapt": ("models/pretrain/agent.pt", "env.target"),
        **{m: (f"models/policy/{m}/agent.pt", "env.target") for m in methods.calibrated()},
        "oracle": ("models/oracle/agent.pt", "env.target"),
    }


def test_the_reports_orders_are_the_registrys():
    from redraw import results_report as report

    assert methods.baselines() == ("no_adapt", "draw_finetune", "dreamer_finetune")
    assert report._nested_methods() == ("redraw", "redraw_pessimistic", "draw_finetune", "dreamer_finetune",
                                        "no_adapt", "bc", "bc_top50", "oracle")
    assert report._questions() == ("draw_finetune", "dreamer_finetune", "no_adapt", "bc", "bc_top50")
    assert report._main_methods() == ("no_adapt", "draw_finetune", "dreamer_finetune", "redraw", "oracle")
    assert report._label("oracle") == "expert (oracle)" and report._label("bc") == "bc"


def test_redraw_pessimistic_lives_in_its_module():
    """Its calibration's ensemble and its policy stage's pessimism are hooks of its registry entry;
    the agent's names for the pessimism are the module's."""
    from redraw.agent import pessimism
    from redraw.config import ConfigError
    from redraw.methods import redraw_pessimistic
    from redraw.models.residual import ResidualConfig
    from test_agent import agent

    spec = methods.REGISTRY["redraw_pessimistic"]
    assert spec.residual_settings.__module__ == spec.policy_setup.__module__ == "redraw.methods.redraw_pessimistic"
    assert pessimism.pessimistic is redraw_pessimistic.pessimistic
    assert pessimism.PessimismConfig is redraw_pessimistic.PessimismConfig
    params = {"pessimism": {"members": 3, "bootstrap": True}}
    assert spec.residual_settings(ResidualConfig(hidden=16), params, "p.yaml") == ResidualConfig(
        hidden=16, members=3, bootstrap=True)
    assert methods.REGISTRY["redraw"].residual_settings is None and methods.REGISTRY["redraw"].policy_setup is None
    a = agent()
    a.attach_residual(ResidualConfig(hidden=16, members=3))
    spec.policy_setup(a, params, "p.yaml", "agent.pt")
    assert a.pessimism == redraw_pessimistic.PessimismConfig(members=3, bootstrap=True)
    with pytest.raises(ConfigError, match="agent.pt holds 3 residual members, p.yaml pessimism.members is 2"):
        spec.policy_setup(a, {"pessimism": {"members": 2}}, "p.yaml", "agent.pt")


def test_a_registered_method_is_picked_up_by_every_dispatch(toy):
    """One definition and one ``register`` call: the calibration trains its part with its loss, the
    stages list it, evaluate@ finds its policy, and the reports take its records, in its place."""
    from redraw import cli_stages
    from redraw import results_report as report
    from redraw.agent.adapt import CalibrateConfig, Calibrator
    from redraw.models.residual import ResidualConfig
    from redraw.stages import evaluate
    from test_agent import agent
    from test_models import SPEC, batch_for

    assert methods.calibrated()[-1] == toy and methods.evaluated()[-2:] == (toy, "oracle")
    a = agent()
    before = {k: v.clone() for k, v in a.state_dict().items()}
    cal = Calibrator(a, toy, CalibrateConfig(), ResidualConfig())
    assert cal.params == [a.wm.init_logits] and cal.opt.param_groups[0]["lr"] == 1e-3
    metrics = cal.step(batch_for(SPEC, B=2, T=6))
    assert set(metrics) == {"calib/kl", "loss/calib", "grad/calib"}
    changed = {k for k, v in a.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"wm.init_logits"}

    stages = cli_stages._stages()
    assert stages[f"calibrate@{toy}"][:2] == ("calibrate", [toy])
    assert stages[f"train_policy@{toy}"][:2] == ("train_policy", [toy])
    assert stages[f"evaluate@{toy}"][:2] == ("evaluate", [toy])
    assert evaluate.POLICIES[toy] == (f"models/policy/{toy}/agent.pt", "env.target")
    assert evaluate.EvaluateConfig().methods[-2:] == (toy, "oracle")

    assert report._methods()[-2:] == (toy, "oracle")
    assert report._nested_methods().index(toy) == report._nested_methods().index("dreamer_finetune") + 1
    assert toy in report._questions()
    rec = {"pair": "p", "seed": 0, "method": toy, "target_transitions": 1, "protocol": "offline",
           "return_mean": 1.0, "return_std": 0.0, "episodes": 1, "preset": "cpu", "commit": "c"}
    report._check(Path("results.json"), "records", 0, rec, report.RECORD_FIELDS)  # a known method


def test_the_registry_refuses_a_taken_name_and_an_unknown_one():
    with pytest.raises(ValueError, match="registered already"):
        register(Method("redraw"))
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        methods.get("magic")
    with pytest.raises(ValueError, match="unknown method 'no_adapt'; choose one of draw_finetune"):
        methods.get("no_adapt", methods.calibrated())
    with pytest.raises(ValueError, match="needs both"):
        Method("half", trainable=draw_finetune.trainable)
