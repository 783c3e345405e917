"""The Streamlit page of `hpsv3 demo-ui`: images and a prompt in, mu and sigma from the endpoint out.

Streamlit runs this file as a script on every interaction (`hpsv3_demo.launch` starts it with
`streamlit run demo/app.py -- --endpoint HOST:PORT`). Scores come from the endpoint through `HPSv3Client`,
only when "Score" is pressed; the page keeps the last results in the session.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from hpsv3_client import HPSv3Client
from hpsv3_demo import logic
from hpsv3_serve.client_tls import add_tls_arguments, tls_options
from hpsv3_serve.errors import HPSv3Error
from hpsv3_serve.inputs import IMAGE_SUFFIXES

UPLOAD_TYPES = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]


def options() -> argparse.Namespace:
    """The arguments `hpsv3_demo.launch` passes after `--`."""
    parser = argparse.ArgumentParser(prog="hpsv3 demo-ui (page)")
    parser.add_argument("--endpoint", default="127.0.0.1:8001")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--no-urls", action="store_true")
    parser.add_argument("--examples", type=Path)
    add_tls_arguments(parser)
    return parser.parse_args(sys.argv[1:])


def use_example_prompt() -> None:
    """Copy the chosen example prompt into the prompt box (a callback runs before the widgets are drawn)."""
    if st.session_state.example_prompt:
        st.session_state.prompt = st.session_state.example_prompt


def inputs(args: argparse.Namespace, examples: logic.Examples) -> tuple[str, list[logic.Item]] | None:
    """The input column; the prompt and the items to score once "Score" is pressed, else None."""
    prompt = st.text_input("Prompt", key="prompt", placeholder="a red fox in the snow")
    uploads = st.file_uploader("Images", type=UPLOAD_TYPES, accept_multiple_files=True, key="uploads")
    urls = ""
    if not args.no_urls:
        urls = st.text_area("…or image URLs, one per line", key="urls", height=68, placeholder="https://…/image.png")
    chosen: list[str] = []
    if examples.images:
        with st.expander("Built-in examples", expanded=True):
            chosen = st.multiselect("Example images", list(examples.images), key="examples")
            if examples.prompts:
                st.selectbox("Example prompt", examples.prompts, index=None, key="example_prompt",
                             placeholder="pick one to fill the prompt", on_change=use_example_prompt)  # fmt: skip
    if not st.button("Score", type="primary", key="score"):
        return None
    files = [(upload.name, upload.getvalue()) for upload in uploads or []]
    picked = [(name, examples.images[name]) for name in chosen]
    return prompt, logic.collect(files, urls, picked, allow_urls=not args.no_urls)


def score(endpoint: str, timeout_s: float, prompt: str, items: list[logic.Item], tls: dict) -> None:
    """Score the items on the endpoint; keep the rows (or why nothing could be scored) in the session."""
    for key in ("failure", "rows"):
        st.session_state.pop(key, None)
    if not items:
        st.session_state.failure = "Add an image first: upload one, paste a URL or pick an example."
        return
    sendable = [item.image for item in items if item.error is None]
    try:
        with st.spinner(f"Scoring {len(sendable)} image(s) on {endpoint} …"):
            results = HPSv3Client(endpoint, timeout_s=timeout_s, **tls).score(sendable, prompt) if sendable else []
    except (HPSv3Error, ValueError) as exc:  # no server answers, the model is not served, a bad address
        st.session_state.failure = f"Cannot score on the endpoint {endpoint}: {exc}"
        return
    except Exception as exc:  # anything else: say what, keep the page
        st.session_state.failure = f"Cannot score on the endpoint {endpoint}: {type(exc).__name__}: {exc}"
        return
    st.session_state.rows = logic.rows(items, results)
    st.session_state.scored_prompt = prompt
    st.session_state.thumbnails = {item.label: item.image for item in items if isinstance(item.image, bytes)}


def chart(rows: list[logic.Row]) -> alt.Chart:
    """mu as bars (highest first), mu ± sigma as a line on each."""
    data = pd.DataFrame([{"image": r.label, "mu": r.mu, "low": r.mu - r.sigma, "high": r.mu + r.sigma} for r in rows])
    order = list(data["image"])
    base = alt.Chart(data).encode(y=alt.Y("image:N", sort=order, title=None))
    bars = base.mark_bar(color="#4c78a8").encode(x=alt.X("mu:Q", title="mu (bar), mu ± sigma (line)"),
                                                  tooltip=["image", "mu", "low", "high"])  # fmt: skip
    spread = base.mark_rule(color="#e45756", strokeWidth=2).encode(x="low:Q", x2="high:Q")
    return (bars + spread).properties(height=70 + 40 * len(rows))  # the whole chart, axis included


def comparison(rows: list[logic.Row]) -> None:
    """Two scored images (the first two by default) and P(A is preferred over B) under the Gaussian scores."""
    st.subheader("Compare two images")
    by_label = {row.label: row for row in rows}
    labels = list(by_label)
    left, right = st.columns(2)
    a = left.selectbox("Image A", labels, index=0, key="compare_a")
    b = right.selectbox("Image B", labels, index=1, key="compare_b")
    first, second = by_label[a], by_label[b]
    probability = logic.preference_probability(first.mu, first.sigma, second.mu, second.sigma)
    st.metric(f"P(A preferred over B) for “{st.session_state.get('scored_prompt', '')}”", f"{probability:.5f}")
    st.caption("Φ((μA − μB) / √(σA² + σB²)): the chance that A's score beats B's when each score is "
               "Gaussian with the model's mu and sigma.")  # fmt: skip


def results() -> None:
    """The results column: why nothing was scored, or the ranked table, the chart and the comparison."""
    if "failure" in st.session_state:
        st.error(st.session_state.failure)
    rows = st.session_state.get("rows")
    if not rows:
        if "failure" not in st.session_state:
            st.info("Scores appear here: add images and a prompt, then press Score.")
        return
    st.subheader("Scores, best first")
    st.table(pd.DataFrame(logic.table(rows)), hide_index=True)
    scored = [row for row in rows if row.error is None]
    thumbnails = st.session_state.get("thumbnails", {})
    shown = [row for row in scored if row.label in thumbnails]
    if shown:
        st.image([thumbnails[row.label] for row in shown], width=150,
                 caption=[f"{row.rank}. {row.label}" for row in shown])  # fmt: skip
    if scored:
        st.altair_chart(chart(scored), width="stretch")
    if len(scored) >= 2:
        comparison(sorted(scored, key=lambda row: row.index))  # page order: A and B default to the first two given


def main() -> None:
    args = options()
    st.set_page_config(page_title="HPSv3 demo", page_icon="🏅", layout="wide")
    st.title("HPSv3 human preference score")
    st.caption(f"Endpoint **{args.endpoint}** · mu is the score (higher is preferred, no fixed range), "
               "sigma its uncertainty.")  # fmt: skip
    examples = logic.load_examples(args.examples)
    left, right = st.columns([2, 3], gap="large")
    with left:
        submitted = inputs(args, examples)
    if submitted is not None:
        prompt, items = submitted
        score(args.endpoint, args.timeout, prompt, items, tls_options(args))
    with right:
        results()


main()
