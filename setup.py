"""fairseq_admin: Admin, B2T, Pre-LN and Post-LN Transformers for fairseq.

Dependencies are pinned on purpose (README.md, "Why these versions"):
- ve-fairseq 0.12.3 is a prebuilt build of upstream fairseq main for CPython 3.11/3.12; the official fairseq 0.12.2
  fails at import on Python >= 3.11, and fairseq-fixed is source-only (a ~4 minute C++ build on every fresh machine).
- torch 2.13.0 is the CPU build available on our machines; a plain `torch` requirement pulls a multi-GB CUDA build.
"""
from setuptools import find_packages, setup

setup(
    name="fairseq_admin",
    version="0.1.0",
    description="Stable deep Transformers for fairseq: Admin, B2T connection, Pre-LN, Post-LN",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["fairseq_admin", "fairseq_admin.*"]),
    install_requires=[
        "torch==2.13.0",
        "ve-fairseq==0.12.3",
        "numpy==2.4.6",
        "sentencepiece==0.2.3",
        "sacrebleu==2.6.0",
        "sacremoses==0.2.0",
        "matplotlib==3.11.2",
    ],
    extras_require={"test": ["pytest==9.2.0"]},
    entry_points={
        "console_scripts": [
            "fairseq-admin-average=fairseq_admin.cli.average_checkpoints:cli_main",
            "fairseq-admin-evaluate=fairseq_admin.cli.evaluate:cli_main",
            "fairseq-admin-prepare=fairseq_admin.cli.prepare:cli_main",
            "fairseq-admin-diagnose=fairseq_admin.cli.diagnose:cli_main",
        ]
    },
)
