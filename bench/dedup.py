"""Near-duplicate detection (rag.ingest.dedup) on the BBC archive plus perturbed copies of its stories.

    python bench/dedup.py [--bbc ../shared/data/bbc] [--copies 400] [--seed 7]

Every BBC story is in the corpus once; ``--copies`` of them are filed again the way wire stories come
back: a new headline, sentences dropped, a dateline or credit line added, some words changed, or the
story cut short (each copy gets two to four of these; light, medium or heavy: 1-3 sentences dropped,
1-3% of words changed, cut by 10-30%). The BBC set's own repeats
(pairs of stories whose shingle sets already overlap by Jaccard >= 0.3, found by LSH at 0.2 and checked exactly) are left
out first, so that the only true duplicate pairs are (story, its copy). Prints pairwise precision and
recall per threshold, overall and per strength, and the time to hash and cluster.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.ingest import dedup  # noqa: E402
from rag.records import Document  # noqa: E402

BBC = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbc"
CREDITS = ["Reporting by {a}; editing by {b}.", "(Reuters) -", "LONDON (AP) -", "Additional reporting by {a}.",
           "This story was first published by the BBC.", "Copyright 2005 The Associated Press."]
NAMES = ["Jane Smith", "Tom Brown", "Ali Khan", "Maria Garcia", "Li Wei", "Sam Okafor"]


def load(folder: Path) -> list[Document]:
    docs = []
    for path in sorted(folder.glob("*/*.txt")):
        raw = path.read_bytes().decode("utf-8", errors="replace").strip()
        title, _, body = raw.partition("\n")
        docs.append(Document(f"{path.parent.name}/{path.stem}", title.strip(), body.strip()))
    return docs


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def perturb(doc: Document, rng: random.Random, strength: str) -> Document:
    sentences = re.split(r"(?<=[.!?])\s+", doc.text)
    level = {"light": 1, "medium": 2, "heavy": 3}[strength]
    edits = rng.sample(["headline", "drop", "credit", "words", "cut"], k=min(5, 1 + level))
    title = doc.title
    if "headline" in edits:
        words = re.findall(r"\w+", sentences[0])
        title = " ".join(rng.sample(words, min(len(words), 7))).capitalize()
    if "drop" in edits and len(sentences) > 4:
        for _ in range(level):
            sentences.pop(rng.randrange(1, len(sentences)))
    if "cut" in edits and len(sentences) > 6:
        sentences = sentences[:max(4, int(len(sentences) * (1 - 0.1 * level)))]
    text = " ".join(sentences)
    if "words" in edits:
        words = text.split(" ")
        vocab = [w for w in words if w.isalpha()]
        for _ in range(int(len(words) * 0.01 * level)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        text = " ".join(words)
    if "credit" in edits:
        credit = rng.choice(CREDITS).format(a=rng.choice(NAMES), b=rng.choice(NAMES))
        text = f"{credit} {text}" if credit.endswith("-") else f"{text}\n\n{credit}"
    return Document(doc.doc_id + "~copy", title, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bbc", type=Path, default=BBC)
    parser.add_argument("--copies", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    docs = load(args.bbc)
    # The archive's own repeats: candidates from LSH at a low threshold, confirmed by exact Jaccard.
    sigs = dedup.update(None, set(), docs)
    shingled = {d.doc_id: dedup.shingles(f"{d.title}\n{d.text}") for d in docs}
    loose = dedup.clusters(sigs, threshold=0.2)
    repeats = {d for d, c in loose.items() if jaccard(shingled[d], shingled[c]) >= 0.3}
    repeats |= {c for d, c in loose.items() if d in repeats}
    base = [d for d in docs if d.doc_id not in repeats]
    print(f"{len(docs)} BBC stories, {len(repeats)} of them already repeats of another (left out): {len(base)} kept")
    chosen = rng.sample(base, args.copies)
    strength = {d.doc_id: rng.choice(["light", "medium", "heavy"]) for d in chosen}
    copies = [perturb(d, rng, strength[d.doc_id]) for d in chosen]
    corpus = base + copies
    truth = {tuple(sorted((d.doc_id, d.doc_id + "~copy"))) for d in chosen}
    started = time.perf_counter()
    sigs = dedup.update(None, set(), corpus)
    hashed = time.perf_counter() - started
    exact = [jaccard(shingled[d.doc_id], dedup.shingles(f"{c.title}\n{c.text}")) for d, c in zip(chosen, copies)]
    print(f"{len(corpus)} articles ({len(copies)} copies), hashed in {hashed:.1f} s; exact Jaccard of the copies: "
          f"min {min(exact):.2f}, median {sorted(exact)[len(exact) // 2]:.2f}")
    natural = {tuple(sorted((d, c))) for d, c in loose.items() if d in repeats}
    print(f"{len(natural)} pairs of the archive's own repeats (shingle Jaccard >= 0.3), for the last column")
    print("Jaccard | overlap | precision | recall | light / medium / heavy recall | archive repeat pairs linked | s")
    archive = dedup.update(None, set(), docs)
    for threshold, overlap in ((0.3, 1.01), (0.4, 1.01), (0.5, 1.01), (0.6, 1.01), (0.5, 0.8), (0.5, 0.7), (0.4, 0.8)):
        t0 = time.perf_counter()
        linked = dedup.clusters(sigs, threshold=threshold, overlap=overlap)
        seconds = time.perf_counter() - t0
        groups: dict[str, list[str]] = {}
        for dup, canonical in linked.items():
            groups.setdefault(canonical, [canonical]).append(dup)
        found = {tuple(sorted(p)) for g in groups.values() for p in combinations(g, 2)}
        hit = found & truth
        precision = len(hit) / len(found) if found else 1.0
        per = {s: sum(1 for d in chosen if strength[d.doc_id] == s and tuple(sorted((d.doc_id, d.doc_id + "~copy"))) in hit)
               / max(1, sum(1 for d in chosen if strength[d.doc_id] == s)) for s in ("light", "medium", "heavy")}
        own = dedup.clusters(archive, threshold=threshold, overlap=overlap)
        own_pairs = {tuple(sorted(p)) for p in own.items()}
        print(f"{threshold:7.1f} | {overlap if overlap <= 1 else '-':>7} | {precision:9.3f} | {len(hit) / len(truth):6.3f} | "
              f"{per['light']:.3f} / {per['medium']:.3f} / {per['heavy']:.3f} | {len(own_pairs & natural):4d} of "
              f"{len(natural)} | {seconds:.2f}"
              + ("   <- rag.ingest.dedup" if (threshold, overlap) == (dedup.THRESHOLD, dedup.OVERLAP) else ""))


if __name__ == "__main__":
    main()
