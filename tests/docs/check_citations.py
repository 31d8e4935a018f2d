#!/usr/bin/env python3
"""tests/docs/check_citations.py -- the repository cites only its own documents.

Sources, tests, bench, scripts and docs name the documents that explain them. Every such
citation must lead somewhere a reader of this repository can follow:
  - no file names a document that is not in the repository (FOREIGN_DOCUMENT below: an
    upper-case contract, design or style file, or a numbered rule of one): the user's
    reference is docs/api.md, the design is docs/architecture.md;
  - every `docs/api.md "Section"` citation names a heading of docs/api.md or one of its bold
    paragraph leads (**Section.**), so renaming a section breaks this test, not the reader.

Usage: check_citations.py <source dir>. Exit 0 when clean, 1 with one line per problem.
"""
import os
import re
import sys

SCANNED_DIRS = ["lib", "server", "tests", "docs", "scripts", "bench", "examples", "cmake",
                "docker", "schema"]
SCANNED_FILES = ["README.md", "CMakeLists.txt"]
SKIPPED_SUFFIXES = (".db", ".png", ".onnx", ".bin", ".gz")

FOREIGN_DOCUMENT = re.compile(r"\b(API|DESIGN|STYLE)(\.md\b|\s+(rule|section)\b)")
# docs/api.md "Section", possibly wrapped onto the next comment line.
API_CITATION = re.compile(r'docs/api\.md[,]?[\s*#/]*"([^"\n]+)"')


def api_sections(api_md):
    sections = set()
    for line in api_md.splitlines():
        heading = re.match(r"#+\s+(.*?)\s*$", line)
        if heading:
            sections.add(heading.group(1))
        for lead in re.findall(r"\*\*([^*]+?)\.?\*\*", line):
            sections.add(lead.rstrip("."))
    return sections


def files_to_scan(root):
    for name in SCANNED_FILES:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            yield path
    for top in SCANNED_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = [d for d in dirnames if not d.startswith("build")]
            for name in sorted(filenames):
                if not name.endswith(SKIPPED_SUFFIXES):
                    yield os.path.join(dirpath, name)


def main():
    root = sys.argv[1]
    with open(os.path.join(root, "docs", "api.md"), encoding="utf-8") as f:
        sections = api_sections(f.read())
    problems = []
    citations = 0
    for path in files_to_scan(root):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            continue
        rel = os.path.relpath(path, root)
        if rel == os.path.join("tests", "docs", "check_citations.py"):
            continue
        for m in FOREIGN_DOCUMENT.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"{rel}:{line}: cites {m.group(0)}, which is not in the repository")
        for m in API_CITATION.finditer(text):
            citations += 1
            if m.group(1) not in sections:
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f'{rel}:{line}: docs/api.md has no section "{m.group(1)}"')
    for p in problems:
        print(p)
    if citations == 0:
        print("no docs/api.md citation found: is the source directory right?")
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
