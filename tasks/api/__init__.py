"""The UserTesting Results API: one HTTP client wrapper, the rate limiter, the answers' models."""
