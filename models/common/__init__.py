"""Building blocks shared by the twins of several families."""
