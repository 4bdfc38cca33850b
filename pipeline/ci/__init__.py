"""The plan as CI data, and one small writer per CI system.

The plan is data (Spack's generated pipelines work this way): ``levels`` turns the jobs to
build into CI jobs grouped by dependency level and arch; ``gitlab`` writes them as a child
pipeline, ``github`` as matrices a static workflow reads from its ``plan`` job's outputs.
Nothing here runs a job or asks a registry.
"""
