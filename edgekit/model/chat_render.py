"""Rendering a checkpoint's chat template: sandboxed and bounded, because the template is data from the checkpoint.

Jinja's immutable sandbox (no attribute of Python objects beyond what templates need), with the helpers Hugging Face
chat templates expect (`raise_exception`, an HTML-neutral `tojson`, `{% generation %}`), and limits: repetition and
powers too large for a prompt are refused before they are computed, the render is stopped after TEMPLATE_MAX_STEPS
lines of the template's compiled code (its loops are Python loops, however they nest), and its output is bounded.
"""

from __future__ import annotations

import contextlib
import json
import sys
from functools import lru_cache

from edgekit.errors import EdgekitError


def _template_environment():
    """Sandboxed jinja2 environment with the options and helpers HF chat templates expect."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        # `{% generation %}...{% endgeneration %}` marks assistant text for training masks; render it as-is.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja's own tojson escapes HTML characters, which would change the prompt text.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        # A template from a checkpoint is data, not code: `'x' * 10**9` or `2 ** 10**9` is refused, not computed.
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context, operator, left, right):
            if operator == "**" and isinstance(right, int) and abs(right) > 1024:
                raise jinja2.exceptions.SecurityError(f"exponent {right} is too large for a chat template")
            if (
                operator == "*"
                and isinstance(right, int)
                and hasattr(left, "__len__")
                and len(left) * right > TEMPLATE_MAX_OUTPUT
            ):
                raise jinja2.exceptions.SecurityError("a repetition larger than a prompt")
            if operator == "*" and isinstance(left, int) and hasattr(right, "__len__"):
                return self.call_binop(context, operator, right, left)
            return super().call_binop(context, operator, left, right)

    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


@lru_cache(maxsize=8)
def compile_chat_template(chat_template: str):
    import jinja2

    try:
        return _template_environment().from_string(chat_template)
    except jinja2.TemplateSyntaxError as e:
        raise EdgekitError(
            f"chat template line {e.lineno}: {e.message}; fix chat_template.jinja "
            "(or chat_template in tokenizer_config.json)"
        ) from None


def render_chat(
    chat_template: str, messages: list[dict], *, add_generation_prompt: bool = True, **template_vars
) -> str:
    """Render a conversation with the checkpoint's template, as tokenizer.apply_chat_template(tokenize=False)."""
    import jinja2

    template = compile_chat_template(chat_template)
    try:
        with _step_limit(TEMPLATE_MAX_STEPS):
            text = template.render(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **template_vars,
            )
    except jinja2.TemplateError as e:
        raise EdgekitError(f"chat template failed to render: {e}") from None
    except _RunawayTemplate:
        raise EdgekitError(
            f"chat template did not finish rendering within {TEMPLATE_MAX_STEPS:,} steps (a runaway "
            "loop?); fix chat_template.jinja (or chat_template in tokenizer_config.json)"
        ) from None
    if len(text) > TEMPLATE_MAX_OUTPUT:
        raise EdgekitError(f"chat template rendered {len(text):,} characters for one question; fix the template")
    return text


TEMPLATE_MAX_STEPS = 2_000_000  # line events of the template's compiled code; a chat turn takes a few thousand
TEMPLATE_MAX_OUTPUT = 1 << 22


class _RunawayTemplate(Exception):
    pass


@contextlib.contextmanager
def _step_limit(limit: int):
    """Count the Python lines the render runs (sys.settrace) and stop it past `limit`: a template's loops are
    Python loops, so no template can run forever, whatever it nests."""
    steps = 0

    def local(frame, event, arg):
        nonlocal steps
        if event == "line":
            steps += 1
            if steps > limit:
                raise _RunawayTemplate()
        return local

    def tracer(frame, event, arg):
        return local

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(previous)
