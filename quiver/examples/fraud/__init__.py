"""The fraud example: users, merchants, transactions and labels."""
