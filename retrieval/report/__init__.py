"""HTML pages a person can look at: one per run, and one for the leaderboard.

Both are static files that open from disk in any browser, with no server and no network.
"""
from retrieval.report.leaderboard_page import build_leaderboard_page
from retrieval.report.run_page import build_run_report

__all__ = ["build_leaderboard_page", "build_run_report"]
