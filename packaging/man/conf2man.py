#!/usr/bin/python3
"""conf2man.py -- writes wshub.conf(5) from conf/wshub.conf.

conf/wshub.conf already documents every option (tests/test_cli.py checks that it lists each one
the parser knows), with its default and when to change it. The manual page is generated from it
at build time, so the two can never disagree and nobody keeps a second copy up to date by hand.

The example file's shape, which this script relies on:
  - a header of comment lines up to the first blank line (the file's own description, skipped),
    then a comment paragraph starting "# Syntax:" (the syntax rules, kept);
  - sections introduced by "# ---- Title ---...";
  - each option: a paragraph of comment lines, then one line "name value".
Anything else (a comment paragraph not followed by an option) is an error, so a change in the
file's shape fails the build instead of silently dropping text.

    packaging/man/conf2man.py conf/wshub.conf packaging/man/wshub.conf.5.in > wshub.conf.5

The template holds the page's fixed parts; @OPTIONS@ and @SYNTAX@ are replaced.
"""
import re
import sys


def roff_escape(text):
    """Plain text to roff: backslashes, and lines starting with '.' or "'"."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"(?m)^([.'])", r"\\&\1", text)
    return text


def roff_inline(text):
    """`code` spans become bold."""
    return re.sub(r"`([^`]+)`", r"\\fB\1\\fR", roff_escape(text))


def parse(path):
    """Returns (syntax paragraph, [(section title, [(name, value, description)], [intro])]).
    A paragraph right after a section's title introduces the section; one that ends with a
    commented "name value" line documents a list option that has no default."""
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    syntax, sections, para = [], [], []
    in_syntax = False
    for lineno, line in enumerate(lines, 1):
        m = re.match(r"^# ---- (.+?) -+$", line)
        if m:
            sections.append((m.group(1), [], []))
            para = []
            continue
        if line.startswith("#"):
            text = line[1:].strip()
            if not sections:
                if text.startswith("Syntax:"):
                    in_syntax = True
                if in_syntax:
                    syntax.append(text)
                continue
            para.append(text)
            continue
        if not line.strip():
            in_syntax = False
            if para and sections:
                title, options, intro = sections[-1]
                example = re.match(r"^([a-z_]+) \S", para[-1])
                if not options and not intro:
                    intro.extend(t for t in para if t)  # the section's introduction
                elif example:
                    # a list option without a default, shown by commented example lines
                    options.append((example.group(1), "", " ".join(para)))
                else:
                    # a comment paragraph must be followed directly by its option line
                    raise SystemExit("%s:%d: comment paragraph without an option" %
                                     (path, lineno))
                para = []
            continue
        if not sections:
            raise SystemExit("%s:%d: option before the first section" % (path, lineno))
        name, _, value = line.strip().partition(" ")
        if not para:
            raise SystemExit("%s:%d: option %s has no description" % (path, lineno, name))
        sections[-1][1].append((name, value.strip(), " ".join(para)))
        para = []
    return " ".join(syntax), sections


def render_options(sections):
    out = []
    for title, options, intro in sections:
        out.append(".SS %s" % roff_escape(title))
        if intro:
            out.append(roff_inline(" ".join(intro)))
        for name, value, desc in options:
            out.append(".TP")
            out.append("\\fB%s\\fR \\fI%s\\fR" % (roff_escape(name), roff_escape(value)))
            out.append(roff_inline(desc))
    return "\n".join(out)


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: conf2man.py CONF TEMPLATE")
    syntax, sections = parse(argv[1])
    if not syntax or not sections:
        sys.exit("conf2man: %s: no syntax paragraph or no sections found" % argv[1])
    with open(argv[2], encoding="utf-8") as f:
        page = f.read()
    page = page.replace("@SYNTAX@", roff_inline(syntax))
    page = page.replace("@OPTIONS@", render_options(sections))
    sys.stdout.write(page)


if __name__ == "__main__":
    main(sys.argv)
