"""Views of stored analysis results (``RulesResult``, ``PathwaysResult``), apart from the algorithms
that produce them: the API, views and pages read results through these and never import an
algorithm module."""
