"""`hpsv3 demo-ui`: a web page that scores images on an HPSv3 endpoint (Streamlit, through HPSv3Client)."""
