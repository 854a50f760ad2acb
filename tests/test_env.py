"""dlfund.env_report / `dlfund env`: what is there, and the set-up problems that cost people hours."""

import io

import pytest

import dlfund
from dlfund import cli
from dlfund.env import environment, problems


def base(**changes):
    info = {
        "backend": "cpu",
        "versions": {"jax": "0.10.2", "jaxlib": "0.10.2"},
        "x64": False,
        "colab": False,
        "local_devices": 1,
    }
    return {**info, **changes}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("COLAB_TPU_ADDR", "TPU_NAME", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_FLAGS", "COLAB_RELEASE_TAG"):
        monkeypatch.delenv(name, raising=False)


def test_the_report_names_backend_devices_processes_and_versions():
    out = io.StringIO()
    text = dlfund.env_report(file=out)
    assert out.getvalue().strip() == text
    assert "backend: cpu; devices: 1 (1 x cpu)" in text
    assert "processes: 1 (this is process 0)" in text
    assert "jax 0." in text and "flax " in text and "dlfund " in text
    assert "problems: none found" in text
    info = environment()
    assert info["device_count"] == 1 and info["process_count"] == 1 and info["problems"] == []


def test_a_tpu_that_jax_did_not_find_is_reported(monkeypatch):
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    (found,) = problems(base(colab=True))
    assert "a TPU is attached but JAX runs on cpu" in found and "jax[tpu]" in found
    assert problems(base(backend="tpu", colab=True)) == []


def test_colab_on_cpu_says_how_to_change_the_runtime():
    (found,) = problems(base(colab=True))
    assert "Runtime > Change runtime type" in found


def test_gpu_preallocation_is_explained_until_it_is_turned_off(monkeypatch):
    (found,) = problems(base(backend="gpu"))
    assert "preallocates 75% of GPU memory" in found and "XLA_PYTHON_CLIENT_PREALLOCATE=false" in found
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    assert problems(base(backend="gpu")) == []


def test_x64_and_a_jax_jaxlib_mismatch_are_reported():
    (x64,) = problems(base(x64=True))
    assert "64-bit mode is on" in x64
    (mismatch,) = problems(base(versions={"jax": "0.10.2", "jaxlib": "0.9.0"}))
    assert "jax 0.10.2 and jaxlib 0.9.0 differ" in mismatch


def test_virtual_cpu_devices_are_not_mistaken_for_real_ones(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    (found,) = problems(base(local_devices=8))
    assert "the 8 CPU devices are virtual" in found


def test_the_env_command(capsys):
    assert cli.main(["env"]) == 0
    assert "backend: cpu" in capsys.readouterr().out
    assert cli.main(["env", "--verbose"]) == 2
    assert "takes no options" in capsys.readouterr().err
