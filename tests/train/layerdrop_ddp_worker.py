"""Run under torchrun (2 CPU processes, gloo) by test_sharding.py: a few DDP pre-training updates
with LayerDrop at 0.5, the model prepared as training prepares it (`sharding.compile_for`, then
`sharding.wrap`).

Arguments: OUT_DIR PATH [skip-unsearched]. PATH: "compiled" (the one-graph stack; torch.compile
stood in for by the uncompiled functions: the LayerDrop logic is in the Python around the graph)
or "eager" (block by block, activation checkpointing on). "skip-unsearched" then sets the
dropped blocks back to plain skipping while DDP does not search for unused parameters. Each rank
writes rank_K.json (the blocks dropped at each update, whether DDP searched for unused
parameters, which dropped blocks' weights the update changed) and weights_K.pt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

torch.compile = lambda fn, *args, **kwargs: fn  # noqa: E731  (before w2v binds it)

from w2v.models import Wav2Vec2ForPreTraining, load_model_config  # noqa: E402
from w2v.models.accel import release_dropped_grads, set_activation_checkpointing  # noqa: E402
from w2v.train import distributed, sharding  # noqa: E402
from w2v.train.losses import pretraining_loss  # noqa: E402

out, path, unsearched = Path(sys.argv[1]), sys.argv[2], sys.argv[3:] == ["skip-unsearched"]
torch.set_num_threads(1)
info = distributed.dist_info()
dev = distributed.init(info, torch.device("cpu"), 120.0)
cfg = load_model_config("tiny", layerdrop=0.5, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
torch.manual_seed(0)
model = Wav2Vec2ForPreTraining(cfg).train()
if path == "compiled":
    sharding.compile_for(model, "ddp", info)
else:
    set_activation_checkpointing(model, True)
encoder = model.wav2vec2.encoder
ddp = sharding.wrap(model, "ddp", info, dev, False, find_unused=False)
find_unused = ddp.find_unused_parameters
if unsearched:  # what DDP is given when nothing ties the dropped blocks in
    encoder.dropped_blocks = "skip"
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
