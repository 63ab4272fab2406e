import glob

from media_retrieval import MediaIndex, load_model

# make demo's model (or yours): class, weights, clip spec and δ, as trained
ckpt = sorted(glob.glob("logs/train/runs/*/checkpoints/epoch_*.ckpt"))[-1]
model = load_model(ckpt)
print("clip spec:", model.clip_spec.key())
vector = model.embed_file("data/queries/bench_press_still.jpg")  # a still or a video: (D,)
print("vector:", tuple(vector.shape))

# model=None: the ImageNet Lite0 mean, nothing to train
index = MediaIndex.build("data/my_media", "data/api_index", model=model)
choice = index.delta_choice()  # the model's δ; search(..., delta=0.6) overrides it
print(f"δ = {choice.value}{choice.note}")
for hit in index.search("data/queries/bench_press_still.jpg", k=3):
    print(hit.rank, hit.rel_path, f"{hit.distance:.3f} {hit.cosine:.3f} kept={hit.kept}")

print("update:", index.update())  # re-scan: embed new and changed files, drop deleted ones
print("reload:", index.reload())  # pick up a generation another process wrote (True if it did)
