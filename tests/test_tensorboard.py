"""``--tensorboard-logdir`` with the ``[tensorboard]`` extra (tensorboardX): the ``stab_*`` figures of
``--log-stability`` reach TensorBoard's event files. Without tensorboardX fairseq only warns and writes nothing."""
import struct

import pytest

from helpers import run_cli
from test_cli_end_to_end import train_args

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2", reason="the [tensorboard] extra is not installed")


def read_events(path):
    """The Event records of one TFRecord file: [uint64 length][uint32 crc][data][uint32 crc] each."""
    events, data = [], path.read_bytes()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        event = event_pb2.Event()
        event.ParseFromString(data[offset + 12:offset + 12 + length])
        events.append(event)
        offset += 12 + length + 4
    return events


def test_log_stability_writes_stab_tags_to_tensorboard(synthetic_data, tmp_path):
    logdir = tmp_path / "tb"
    args = train_args(synthetic_data, tmp_path / "ckpt", "admin_transformer", "--log-stability", "1",
                      "--tensorboard-logdir", logdir, max_update=2)
    proc = run_cli(*args)
    assert "tensorboard or required dependencies not found" not in proc.stdout + proc.stderr
    files = sorted(logdir.glob("train_inner/events.out.tfevents.*"))
    assert files, f"no train_inner event file under {logdir}: {sorted(logdir.rglob('*'))}"
    scalars = {(value.tag, event.step): value.simple_value
               for path in files for event in read_events(path) for value in event.summary.value}
    tags = {tag for tag, _ in scalars}
    for tag in ("stab_g_last_ffn", "stab_g_enc0", "stab_g_dec1", "stab_beta_enc1", "stab_omega_dec_max"):
        assert tag in tags, sorted(tags)
    assert {step for tag, step in scalars if tag == "stab_g_last_ffn"} == {1, 2}
    assert scalars[("stab_omega_dec_max", 1)] > 1  # profiled ω, not the ω = 1 of an unprofiled model
