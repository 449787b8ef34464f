"""Run by tests/test_export.py in a subprocess: stock fairseq only, the plugin never imported.

    python stock_fairseq_outputs.py REQUEST.pt RESULT.pt

REQUEST.pt holds {"data": data-bin, "checkpoints": [paths], "batches": [net_input dicts], "beam": int,
"max_len_b": int}; RESULT.pt gets, per checkpoint, the teacher-forced log-probabilities of every batch and the best
beam-search hypothesis (token list) of every sentence.
"""
import sys

import torch
from fairseq import checkpoint_utils
from fairseq.sequence_generator import SequenceGenerator


def outputs(path, request):
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": request["data"]})
    model = models[0].eval()
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=request["beam"],
                                  max_len_b=request["max_len_b"])
    log_probs, hypotheses = [], []
    with torch.no_grad():
        for net_input in request["batches"]:
            out = model(**net_input)
            log_probs.append(model.get_normalized_probs(out, log_probs=True))
            hyps = generator.generate([model], {"net_input": net_input})
            hypotheses.append([h[0]["tokens"].tolist() for h in hyps])
    return {"log_probs": log_probs, "hypotheses": hypotheses, "arch": type(model).__module__}


def main(request_path, result_path):
    torch.set_num_threads(1)
    request = torch.load(request_path, weights_only=True)
    results = {path: outputs(path, request) for path in request["checkpoints"]}
    plugin = sorted(name for name in sys.modules if name.split(".")[0] == "fairseq_admin")
    torch.save({"results": results, "plugin_modules": plugin}, result_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
