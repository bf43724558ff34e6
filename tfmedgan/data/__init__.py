"""tfmedgan.data"""
