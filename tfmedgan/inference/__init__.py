"""tfmedgan.inference"""
