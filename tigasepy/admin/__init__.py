"""Administration: the operations every admin front end (ad-hoc commands, CLI, admin API) shares."""
