"""Questions asked of the store, answered the same way on every database.

Views (the CLI today; the dashboard, alerts and /metrics later) call these functions instead of
writing SQL of their own, so each question has one answer and one place to make it fast.
"""
