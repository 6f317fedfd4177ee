"""Video metrics of tokenizer reconstructions of real test clips (what a perfect token model would score)."""
import json, sys, torch, numpy as np
torch.set_num_threads(1)
import elt
from elt.eval.video import VideoSuite, moving_fmnist_reference
from elt.eval.classifier import load_classifier
g = elt.load(sys.argv[1])
real, labels = moving_fmnist_reference(1000, 16, 64)          # the reference: test clips 0..999
held, hlabels = moving_fmnist_reference(1500, 16, 64)
held, hlabels = held[1000:], hlabels[1000:]                    # 500 other test clips
suite = VideoSuite(real, load_classifier(None))
x = torch.from_numpy(held).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
with torch.no_grad():
    recon = torch.cat([g.tokenizer.decode(g.tokenizer.encode(x[i:i + 50])) for i in range(0, len(x), 50)])
from elt.core.generator import to_uint8
out = {"tokenizer_reconstructions": suite.evaluate(to_uint8(recon), hlabels), "real_held_out": suite.evaluate(held, hlabels)}
print(json.dumps(out, indent=1))
json.dump(out, open(sys.argv[2], "w"), indent=1)
