"""A faithful re-creation of the route RL users run today: flow_grpo's remote reward against yifan123/reward-server.

Re-created from the public source, read at these commits:

- yifan123/reward-server 92ac29f (2025-05-28): `app_deqa.py` (a Flask blueprint whose POST `/` does
  `pickle.loads(request.get_data())`, opens each image with `Image.open(BytesIO(d), formats=["jpeg"])`, calls the
  model once on the whole request and answers `pickle.dumps({"outputs": ...})`, or the traceback with status 500),
  `gunicorn.conf.py` (sync workers, one per GPU, timeout 120, bind 127.0.0.1) and the README's start command
  `gunicorn "app_deqa:create_app()"`. Pinned as its requirements.txt: flask 3.1.0, gunicorn 23.0.0.
- yifan123/flow_grpo ac4c86e (2025-07-18): `flow_grpo/rewards.py`, `unifiedreward_score_remote` (the variant that
  sends prompts): a `requests.Session` with `Retry(total=1000, backoff_factor=1, status_forcelist=[500],
  allowed_methods=False)`, `np.array_split` into batches, `Image.fromarray(image).save(buffer, format="JPEG")` at
  PIL's default quality (75), `pickle.dumps({"images": [...], "prompts": [...]})`, `sess.post(url, data=...,
  timeout=120)`, `pickle.loads(response.content)["outputs"]`.

What differs, and why:

- The model is HPSv3: `app.py` scores with the OFFICIAL `HPSv3RewardInferencer` (hpsv3==1.0.0, in `.venv-official`),
  loaded as benchmarks/official_inferencer.py loads it, `inferencer.reward(images, prompts)` under `torch.no_grad`;
  `outputs` is mu per image. `create_app("project", ...)` puts this project's `Scorer` in its place, so that the
  protocol can be tested where the official venv is absent (CI); that is a stand-in, never the baseline. The
  official inferencer is loaded on the CPU over a base with random weights that the checkpoint then replaces (as
  tests/golden/make_golden.py does): right for the tiny model; for 7B, run a reward server of your own.
- One gunicorn worker: the upstream runs one per GPU; this machine has one device (its CPU).
- The client splits indices, not the array, with `np.array_split`: RL batches of mixed sizes are a list, which
  numpy cannot stack. It also counts the POST bodies' bytes, and its retry count is a parameter (the benchmark
  passes 2, so a broken server fails the run instead of retrying for hours). The torch-tensor branch is left out:
  the benchmark hands it uint8 numpy arrays, the form that branch produces.

The server unpickles its request body: anyone who can reach it can run code as its user. It binds 127.0.0.1 only.
"""
