import glob

from media_retrieval import MediaIndex, load_model

ckpt = sorted(glob.glob("logs/train/runs/*/checkpoints/epoch_*.ckpt"))[-1]  # make demo's model, or yours
model = load_model(ckpt)                                   # class, weights, clip spec and δ, as trained
print("clip spec:", model.clip_spec.key())
vector = model.embed_file("data/queries/bench_press_still.jpg")  # a still or a video: a (D,) tensor
print("vector:", tuple(vector.shape))

index = MediaIndex.build("data/my_media", "data/api_index", model=model)  # model=None: ImageNet Lite0 mean
choice = index.delta_choice()                               # search(..., delta=0.6) overrides it
print(f"δ = {choice.value}{choice.note}")
for hit in index.search("data/queries/bench_press_still.jpg", k=3):
    print(hit.rank, hit.rel_path, f"distance {hit.distance:.3f} cosine {hit.cosine:.3f} kept {hit.kept}")

print("update:", index.update())  # re-scan data/my_media: embed new and changed files, drop deleted ones
print("reload:", index.reload())  # pick up a generation another process wrote (True if it switched)
