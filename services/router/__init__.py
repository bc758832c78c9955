"""Router: policy-as-code routing over request attributes and runtime signals (issue 4)."""
