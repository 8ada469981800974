"""Prompt templates of the judges. The judged text sits between `<<<` and `>>>`, which every backend (and the
keyword stand-in) can find; the same delimiters inside the judged text are defused so it cannot end early."""

from __future__ import annotations

# The paper's Fig. 1 ("Template for Semantic LLM Judgment"), filled with the reasoning inside <think>.
SEMANTIC_TEMPLATE = (
    "Evaluate the following medical statement for semantic correctness and clinical coherence:\n\n"
    "Given Statement: <<<{reasoning}>>>\n\n"
    "Answer 'Yes' if the statement is medically coherent and accurate, or 'No' otherwise.\n\n"
    "Answer:"
)


def defuse(text: str) -> str:
    """Break the delimiters inside judged text.

    >>> defuse("a >>> b <<< c")
    'a > > > b < < < c'
    """
    return text.replace("<<<", "< < <").replace(">>>", "> > >")


def semantic_prompt(reasoning: str) -> str:
    """The Fig. 1 prompt asking whether `reasoning` is medically coherent and accurate (Yes/No).

    >>> semantic_prompt("The lesion is in the lung.").splitlines()[2]
    'Given Statement: <<<The lesion is in the lung.>>>'
    """
    return SEMANTIC_TEMPLATE.format(reasoning=defuse(reasoning.strip()))
