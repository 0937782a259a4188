"""Write the golden sets of this example, deterministically (same files on every run).

    python examples/evals/make_datasets.py

datasets/tickets.jsonl: 120 support tickets for `classify-ticket`, tagged by
category; datasets/rag.jsonl: 110 questions with their retrieved documents
for `rag-answer`, tagged by topic. No randomness: every example comes from
templates crossed with fillers, in order.
"""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

HERE = Path(__file__).parent

TICKETS = {
    "billing": [
        "I was charged twice for my {thing} this month",
        "Please refund the {thing} I cancelled",
        "My invoice for the {thing} shows the wrong VAT number",
    ],
    "account": [
        "I cannot reset the password of my {thing} account",
        "My login for the {thing} keeps failing after the update",
        "Please unlock my {thing} account, it says locked",
    ],
    "technical": [
        "The {thing} API returns error 500 since this morning",
        "The {thing} dashboard crashes when I open reports",
        "Requests to the {thing} time out after 30 seconds",
    ],
    "other": [
        "Do you have an office in Lisbon where I can visit the {thing} team?",
        "Just wanted to say the new {thing} looks great, thanks",
        "Is the {thing} team hiring interns this summer?",
    ],
}
THINGS = [
    "storage",
    "compute",
    "database",
    "analytics",
    "backup",
    "CDN",
    "email",
    "search",
    "VPN",
    "DNS",
]
PLANS = ["Pro", "Team", "Starter", "Business", "Enterprise", "Edu", "Nonprofit", "Startup"]
PLANS += ["Agency", "Partner", "Trial", "Legacy"]

# topic: (document title, document text, key fact the answer must contain, questions)
TOPICS = {
    "refunds": (
        "Refund policy",
        "Refunds are issued to the original payment method within 14 days of the request.",
        "14 days",
        ["How long does a refund take for my {thing} plan?", "When will I get my {thing} refund?"],
    ),
    "invoices": (
        "Invoices",
        "Invoices are emailed on the first day of each month and kept under Billing > Invoices.",
        "first day of each month",
        ["When is the {thing} invoice sent?", "Where do I find last month's {thing} invoice?"],
    ),
    "passwords": (
        "Passwords",
        "Reset a password from Settings > Security; the reset link expires after 30 minutes.",
        "Settings > Security",
        ["How do I reset my {thing} password?", "My {thing} password reset link: where is it?"],
    ),
    "uptime": (
        "Service levels",
        "Every paid plan has a 99.95% monthly uptime commitment with service credits.",
        "99.95%",
        ["What uptime does the {thing} plan promise?", "Is there an SLA for {thing}?"],
    ),
    "regions": (
        "Regions",
        "Data is stored in the region chosen at sign-up: Frankfurt, Virginia or Singapore.",
        "Frankfurt",
        ["Which regions can host my {thing} data?", "Where is {thing} data stored?"],
    ),
}


def tickets() -> list[dict[str, object]]:
    rows = []
    for (category, templates), thing in product(TICKETS.items(), THINGS):
        for n, template in enumerate(templates):
            rows.append(
                {
                    "id": f"ticket-{category}-{thing.lower()}-{n}",
                    "variables": {"text": template.format(thing=thing)},
                    "expected": category,
                    "tags": [category],
                }
            )
    return rows


def rag() -> list[dict[str, object]]:
    rows = []
    others = list(TOPICS)
    for i, ((topic, (title, text, fact, questions)), thing) in enumerate(
        product(TOPICS.items(), THINGS + PLANS)
    ):
        distractor = TOPICS[others[(others.index(topic) + 1) % len(others)]]
        question = questions[i % len(questions)].format(thing=thing)
        rows.append(
            {
                "id": f"rag-{topic}-{thing.lower()}",
                "variables": {
                    "question": question,
                    "documents": [
                        {"title": title, "text": text},
                        {"title": distractor[0], "text": distractor[1]},
                    ],
                },
                "expected": fact,
                "reference": text,
                "context": [text],
                "tags": [topic],
            }
        )
    return rows


def main() -> None:
    folder = HERE / "datasets"
    folder.mkdir(exist_ok=True)
    for name, rows in (("tickets", tickets()), ("rag", rag())):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        print(f"wrote {len(rows)} examples to {path.relative_to(HERE)}")


if __name__ == "__main__":
    main()
