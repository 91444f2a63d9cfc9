"""Run under torchrun (2 CPU processes, gloo) by test_sharding.py: a few DDP pre-training updates
of a model compiled as `sharding.compile_for` compiles it for DDP, LayerDrop at 0.5 (torch.compile
stood in for by the uncompiled functions: the LayerDrop logic is in the Python around the graph).

Arguments: OUT_DIR DROPPED_BLOCKS ("" keeps what compile_for chose). Each rank writes
rank_K.json (the blocks dropped at each update, whether DDP searched for unused parameters,
which dropped blocks' weights the update changed) and weights_K.pt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

torch.compile = lambda fn, *args, **kwargs: fn  # noqa: E731  (before w2v binds it)

from w2v.models import Wav2Vec2ForPreTraining, load_model_config  # noqa: E402
from w2v.models.accel import layerdrop_leaves_parameters_unused, release_dropped_grads  # noqa: E402
from w2v.train import distributed, sharding  # noqa: E402
from w2v.train.losses import pretraining_loss  # noqa: E402

out, mode = Path(sys.argv[1]), sys.argv[2]
torch.set_num_threads(1)
info = distributed.dist_info()
dev = distributed.init(info, torch.device("cpu"), 120.0)
cfg = load_model_config("tiny", layerdrop=0.5, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
torch.manual_seed(0)
model = Wav2Vec2ForPreTraining(cfg).train()
sharding.compile_for(model, "ddp", info)
encoder = model.wav2vec2.encoder
if mode:
    encoder.dropped_blocks = mode
find_unused = layerdrop_leaves_parameters_unused(model, cfg.layerdrop)
if mode == "skip-unsearched":  # what DDP is given when nothing ties the dropped blocks in
    encoder.dropped_blocks, find_unused = "skip", False
ddp = sharding.wrap(model, "ddp", info, dev, False, find_unused=find_unused)
sharding.share_layerdrop(ddp, torch.Generator().manual_seed(3))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
data = torch.Generator().manual_seed(10 + info.rank)
record = {"find_unused": find_unused, "dropped_blocks": encoder.dropped_blocks, "dropped": [], "changed": []}
for update in range(4):
    before = [[p.detach().clone() for p in layer.parameters()] for layer in encoder.layers]
    wav = torch.randn(2, 8000, generator=data)
    loss, _ = pretraining_loss(ddp(wav, torch.full((2,), 8000), generator=torch.Generator().manual_seed(update)))
    loss.backward()
    dropped = list(encoder.dropped_layers)
    release_dropped_grads(model)
    opt.step()
    opt.zero_grad(set_to_none=True)
    record["dropped"].append(dropped)
    record["changed"].append([i for i in dropped if any(not torch.equal(a, b) for a, b in
                                                        zip(before[i], encoder.layers[i].parameters()))])
(out / f"rank_{info.rank}.json").write_text(json.dumps(record))
torch.save({k: v.detach() for k, v in model.state_dict().items()}, out / f"weights_{info.rank}.pt")
distributed.shutdown()
