from exatrkx_sweeps.data.simulate import SimulationConfig, simulate_event
from exatrkx_sweeps.data.validate import compare, main, validation_figures


def test_simulator_matches_real_data_figures(detector):
    mu = 100
    events = [
        simulate_event(SimulationConfig(mu=mu), seed=21, event_id=i, detector=detector) for i in range(2)
    ]
    table = compare(validation_figures(events), mu=mu)
    judged = table[table.within != ""]
    assert len(judged) >= 25
    outside = judged[judged.within != "yes"]
    assert outside.empty, outside.to_string()


def test_cli_prints_side_by_side(capsys):
    assert main(["--events", "1", "--mu", "20"]) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "duplicate_fraction_pixel_endcap" in out and "within tolerance" in out
