"""Generic helpers that know nothing about messages: caches, bulk SQL, the SSRF guard, PII masking,
the Redis diagnosis. They import only Django, the standard library and third-party packages."""
