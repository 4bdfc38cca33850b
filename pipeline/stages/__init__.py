"""Pipeline stages (build, convert, test, publish).

Each stage is a module of its own and consumes jobs of the plan (see ``pipeline.plan``).
The stages arrive with the issues that make them real; nothing here pretends to build.
"""
