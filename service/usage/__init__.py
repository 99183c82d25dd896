"""What readers ask and think of the answers: the record store and its insights."""
