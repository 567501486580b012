"""Local stand-ins for what the relay talks to: an OpenAI-compatible upstream, the Lambda runtime
API, moto's AWS server and an OIDC issuer with real keys (sign-in), shared by `make dev`,
`make invoke`, the tests and the benchmarks.

Imported by tests/, bench/, infra/ and tools/; it imports none of them, and handler/ never
imports it (it is not in the Lambda package).
"""
