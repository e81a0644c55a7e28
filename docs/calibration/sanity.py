import torch, sys
from flanmoe.data.tokenizer import load_tokenizer
from flanmoe.eval.scoring import generate
from flanmoe.model.transformer import FlanMoEModel
from flanmoe.data.embedded.world import build_world
torch.set_num_threads(1)
md=sys.argv[1]
m=FlanMoEModel.from_pretrained(md, torch.device("cpu"), None, moe_overrides={"dropless": True}).eval()
tok=load_tokenizer(md); tok.encode_special_tokens=True
w=build_world(1234,int(sys.argv[2]))
P=[]
for c in w.of("country")[:3]:
    P+= [f"The capital of {c.name} is<extra_id_0>.", f"The language of {c.name} is<extra_id_0>.", f"The currency of {c.name} is the<extra_id_0>."]
    print(c.name, c.attrs)
ids=[e.ids for e in tok.encode_batch(P)]
print(tok.encode_batch(P[:1])[0].tokens)
import inspect; print(inspect.signature(generate))
out=generate(m, ids, max_new_tokens=12)
for p,o in zip(P,out): print(p, "=>", tok.decode(o, skip_special_tokens=False) if isinstance(o,list) else o)
