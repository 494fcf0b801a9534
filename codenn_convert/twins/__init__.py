"""The two twins of a model: building them with one state, the exact weight mapping between
their layouts, and seeded weights that look trained."""
