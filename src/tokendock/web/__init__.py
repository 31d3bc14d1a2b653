"""HTTP only: parse, call one service, render JSON / SSE."""
