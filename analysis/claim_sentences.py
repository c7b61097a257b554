"""The claim kinds the analysis can evaluate (analysis/claim_kinds.py) and the sentence each one's row says:
the one registry the plan's schema (analysis/plan.py) checks kinds against, kept apart so that neither of
those two modules imports the other."""

TEXT = {"gap_larger": "{arm}: larger gap than {against}",
        "gap_more_variable": "{arm}: more variable gap than {against}",
        "gap_equivalent": "{arm}: gap equivalent to {against}'s",
        "lambda_higher": "{arm}: higher final λ1 than {against}",
        "lambda_higher_at_equal_steps": "{arm}: higher λ1 than {against} at equal steps",
        "lambda_equivalent": "{arm}: reproduces {against}'s final λ1",
        "lambda_follows_rho": "{arm}: λ1 ratio to {against} equals their inverse ρ̄ ratio (Theorem 1)",
        "gap_lambda_correlation": "gap–λ1 correlation within {arm}"}
