"""What an upstream may see of a client's request: the header policy and the path, decided once."""
