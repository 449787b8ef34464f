"""Start-up refusals of the model's shared options: one clear line, before any model is built."""
import pytest

from helpers import build_model


@pytest.mark.parametrize("arch, extra, message", [
    ("admin_transformer", ["--encoder-layers", "0"], "--encoder-layers must be a positive integer"),
    ("postln_transformer", ["--decoder-layers", "-1"], "--decoder-layers must be a positive integer"),
    ("postln_transformer", ["--admin-init", "O(1)"], "--admin-init is an option of --residual-scheme admin"),
    ("postln_transformer", ["--no-b2t-init-scale"], "--no-b2t-init-scale is an option of --residual-scheme b2t"),
    ("b2t_transformer", ["--admin-omega", "scalar"], "--admin-omega is an option of --residual-scheme admin"),
    ("preln_transformer", ["--admin-profile-save", "x.init"], "--admin-profile-save is an option of --residual-scheme admin"),
    ("deepnorm_transformer", ["--no-cross-attention"], "--no-cross-attention is not supported"),
    ("postln_transformer", ["--admin-ffn-init", "xavier"], "--admin-ffn-init is an option of another scheme"),
    ("admin_transformer", ["--layer-init", "fairseq", "--admin-ffn-init", "xavier"], "contradicts --layer-init"),
    ("admin_transformer", ["--admin-profile-save", "a.init", "--admin-profile-load", "b.init"], "not both"),
    ("preln_transformer", ["--log-stability", "-1"], "--log-stability must be a whole number >= 0"),
])
def test_refused_at_build(arch, extra, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        build_model(arch, *extra)
    assert "\n" not in str(info.value)


def test_profile_paths_are_not_touched_when_a_model_is_built(tmp_path):
    """A model rebuilt from its checkpoint (fairseq-generate, the hub, export) carries its training run's profile
    paths; they are checked only before a fresh run's first update (tests/test_reliability.py, through
    fairseq-train), never at build."""
    profile = tmp_path / "profile.ratio.init"
    profile.write_text("1 1.5\n")  # another depth
    build_model("admin_transformer", "--admin-profile-load", str(profile))
    build_model("admin_transformer", "--admin-profile-load", str(tmp_path / "gone.init"))
    build_model("admin_transformer", "--admin-profile-save", "/")
