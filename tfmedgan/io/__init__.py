"""tfmedgan.io"""
